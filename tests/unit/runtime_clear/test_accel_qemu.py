"""The accelerator choice, the TSC frequency and the qemu command line (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crio.errors import ConfigError, UnsupportedError
from crio_plugins.runtime_clear.accel import HostFacts, choose_accel, kvm_problem, parse_tsc_khz
from crio_plugins.runtime_clear.qemu import QemuSettings, kernel_cmdline, qemu_argv

REAL_KVM = HostFacts(kvm_device=True, modules=frozenset({"kvm", "kvm_amd"}))
PVM = HostFacts(kvm_device=True, modules=frozenset({"kvm", "kvm_pvm"}))
NO_KVM = HostFacts(kvm_device=False, modules=frozenset())


@pytest.mark.parametrize(
    ("facts", "requested", "chosen"),
    [
        (REAL_KVM, "auto", "kvm"),
        (REAL_KVM, "tcg", "tcg"),
        (REAL_KVM, "kvm", "kvm"),
        (PVM, "auto", "tcg"),
        (NO_KVM, "auto", "tcg"),
        (HostFacts(kvm_device=True, modules=frozenset({"kvm"})), "auto", "tcg"),
        (HostFacts(True, frozenset({"kvm_intel", "kvm_pvm"})), "auto", "tcg"),
    ],
)
def test_auto_picks_kvm_only_where_it_is_a_real_kvm(
    facts: HostFacts, requested: str, chosen: str
) -> None:
    assert choose_accel(requested, facts) == chosen


@pytest.mark.parametrize(
    ("facts", "reason"),
    [(PVM, "PVM"), (NO_KVM, "/dev/kvm is missing"), (HostFacts(True, frozenset()), "neither")],
)
def test_asking_for_kvm_where_it_cannot_work_says_why(facts: HostFacts, reason: str) -> None:
    assert reason in kvm_problem(facts)
    with pytest.raises(UnsupportedError, match=reason):
        choose_accel("kvm", facts, key="crio.runtime.runtimes.clear.accel")


def test_unknown_accel_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"runtimes\.clear\.accel: got 'hvf'"):
        choose_accel("hvf", REAL_KVM, key="crio.runtime.runtimes.clear.accel")


CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.426\ncache size\t: 512 KB\n"


def test_tsc_frequency_prefers_sysfs_then_dmesg_then_cpuinfo() -> None:
    assert parse_tsc_khz(CPUINFO, tsc_freq_khz="2445000\n") == 2445000
    dmesg = "[    0.000063] tsc: Detected 2445.426 MHz processor\n"
    assert parse_tsc_khz("", dmesg=dmesg) == 2445426
    assert parse_tsc_khz(CPUINFO) == 2445426
    assert parse_tsc_khz("no frequency here") == 0


def _settings(**changes: object) -> QemuSettings:
    base = {
        "qemu": "/usr/bin/qemu-system-x86_64",
        "kernel": Path("/a/vmlinux"),
        "initrd": Path("/a/initrd.img"),
        "run_dir": Path("/run/x/vm1"),
        "accel": "tcg",
        "tsc_khz": 2445426,
        "agent_path": "/run/vm/share/.agent/agent.py",
    }
    base.update(changes)
    return QemuSettings(**base)  # type: ignore[arg-type]


def _option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_tcg_gets_cpu_max_and_the_host_tsc() -> None:
    argv = qemu_argv(_settings())
    assert _option(argv, "-cpu") == ["max"]
    assert _option(argv, "-M")[0].startswith("microvm,accel=tcg")
    assert "tsc_early_khz=2445426" in _option(argv, "-append")[0]


def test_kvm_gets_the_host_cpu_and_no_tsc_override() -> None:
    argv = qemu_argv(_settings(accel="kvm"))
    assert _option(argv, "-cpu") == ["host"]
    assert "tsc_early_khz" not in kernel_cmdline(_settings(accel="kvm"))


def test_devices_sockets_and_memory_are_wired() -> None:
    argv = qemu_argv(_settings(memory_mib=256, vcpus=2, kernel_args=("loglevel=7",)))
    devices = _option(argv, "-device")
    assert "vhost-user-fs-device,chardev=fs-root,tag=root" in devices
    assert "vhost-user-fs-device,chardev=fs-share,tag=share" in devices
    assert "virtserialport,chardev=agent,name=crio.agent" in devices
    chardevs = _option(argv, "-chardev")
    assert "socket,id=agent,path=/run/x/vm1/agent.sock,server=on,wait=off" in chardevs
    assert "memory-backend-memfd,id=mem,size=256M,share=on" in _option(argv, "-object")
    assert _option(argv, "-smp") == ["2"]
    assert "virtio-mmio.force-legacy=false" in _option(argv, "-global")
    assert "-no-reboot" in argv
    append = _option(argv, "-append")[0]
    assert "crio.agent=/run/vm/share/.agent/agent.py" in append and append.endswith("loglevel=7")
