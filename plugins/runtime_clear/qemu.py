"""The qemu command line of a pod VM (pure: settings in, argv out).

A ``microvm`` machine: no PCI, no firmware, virtio over MMIO (modern, not
legacy: vhost-user-fs refuses legacy devices), the ELF kernel booted through
its PVH entry, memory from a shared memfd (vhost-user needs it), the serial
console into a file, the agent on a virtio serial port named ``crio.agent``
behind a unix socket, and the two virtiofs shares (tags ``root`` and
``share``). Network devices are added by the supervisor, which knows the
pod's interfaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["QemuSettings", "kernel_cmdline", "qemu_argv"]


@dataclass(frozen=True, slots=True)
class QemuSettings:
    qemu: str
    kernel: Path
    initrd: Path
    run_dir: Path
    accel: str  # "kvm" or "tcg"
    memory_mib: int = 512
    vcpus: int = 1
    tsc_khz: int = 0
    agent_path: str = ""  # the agent in the guest
    guest_python: str = "/usr/bin/python3"
    kernel_args: Sequence[str] = field(default_factory=tuple)


def kernel_cmdline(settings: QemuSettings) -> str:
    args = [
        "console=ttyS0",
        "panic=-1",  # reboot at once; qemu runs with -no-reboot, so it exits
        "quiet",
        "random.trust_cpu=on",
        f"crio.agent={settings.agent_path}",
        f"crio.python={settings.guest_python}",
    ]
    if settings.accel == "tcg" and settings.tsc_khz:
        args.append(f"tsc_early_khz={settings.tsc_khz}")
    args.extend(settings.kernel_args)
    return " ".join(args)


def qemu_argv(settings: QemuSettings) -> list[str]:
    run = settings.run_dir
    machine = f"microvm,accel={settings.accel},acpi=on,rtc=on,memory-backend=mem"
    cpu = "host" if settings.accel == "kvm" else "max"
    memory = f"{settings.memory_mib}M"
    return [
        settings.qemu,
        "-name", run.name,
        "-M", machine,
        "-cpu", cpu,
        "-smp", str(settings.vcpus),
        "-m", memory,
        "-object", f"memory-backend-memfd,id=mem,size={memory},share=on",
        "-global", "virtio-mmio.force-legacy=false",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(settings.kernel),
        "-initrd", str(settings.initrd),
        "-append", kernel_cmdline(settings),
        "-chardev", f"file,id=console,path={run / 'console.log'}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=agent,path={run / 'agent.sock'},server=on,wait=off",
        "-device", "virtio-serial-device",
        "-device", "virtserialport,chardev=agent,name=crio.agent",
        "-chardev", f"socket,id=fs-root,path={run / 'fs-root.sock'}",
        "-device", "vhost-user-fs-device,chardev=fs-root,tag=root",
        "-chardev", f"socket,id=fs-share,path={run / 'fs-share.sock'}",
        "-device", "vhost-user-fs-device,chardev=fs-share,tag=share",
    ]  # fmt: skip
