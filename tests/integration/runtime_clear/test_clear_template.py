"""Pod VMs restored from a template: each its own machine, and crashes leave nothing behind.

One crio for the module, with the clear handler restoring its pod VMs from
the tests' shared template directory (built by the first module that needs
it); its virtiofsd can be held (crashpoint) to kill crio in the middle of a
restore. A second crio, with the default template directory, is killed
while it builds its template.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crio_plugins.runtime_clear._guest_kernel import node_lsm_args
from crio_plugins.runtime_clear.accel import choose_accel, host_facts
from crio_plugins.runtime_clear.options import parse_options
from crio_plugins.runtime_clear.template import TemplateSlot, handler_template
from crio_plugins.runtime_clear.vm import VM, VMSpec
from support.cni import CNIEnv
from support.crashpoint import Hold, crash, in_background
from support.cri import container_config
from support.node import Node, start_node, stop_node
from support.vm import TEST_TEMPLATES, vm_assets_or_skip

pytestmark = pytest.mark.slow

PROBE = (
    "cat /proc/sys/kernel/random/uuid /proc/sys/kernel/random/boot_id; hostname; "
    "cat /sys/class/net/eth0/address; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; "
    "echo; date +%s"
)


class Env:
    def __init__(self, node: Node, cni: CNIEnv, vm_root: Path, hold: Hold, assets: Any) -> None:
        self.node, self.cni, self.vm_root, self.hold, self.assets = node, cni, vm_root, hold, assets
        self.pods: list[tuple[str, str]] = []


def _handler(assets: Any, vm_root: Path, **more: Any) -> dict[str, Any]:
    return {
        "runtime_type": "vm",
        "runtime_root": str(vm_root),
        "kernel": str(assets.kernel),
        "initrd": str(assets.initrd),
        "boot_timeout": 600,
        "vm_template": True,
        **more,
    }


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    assets = vm_assets_or_skip()
    if shutil.which("iptables") is None or not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("needs iptables and the CNI plugins in /usr/lib/cni")
    vm_root = Path(tempfile.mkdtemp(prefix="crio-vmt-", dir="/tmp"))
    hold = Hold(Path(tempfile.mkdtemp(prefix="crio-hold-", dir="/tmp")), "/usr/lib/qemu/virtiofsd")
    node = start_node(
        {"crio.runtime.runtimes.clear": _handler(assets, vm_root, virtiofsd=str(hold.path))}
    )
    cni = CNIEnv(node.base / "cni")
    cni.net_dir = node.base / "net.d"
    cni.write(cni.conflist(portmap=False))
    made = Env(node, cni, vm_root, hold, assets)
    try:
        yield made
    finally:
        try:
            stop_node(node)
        finally:
            hold.release()
            cni.cleanup()
            mounts = Path("/proc/self/mountinfo").read_text()
            shutil.rmtree(vm_root, ignore_errors=True)
            shutil.rmtree(hold.directory, ignore_errors=True)
            assert str(vm_root) not in mounts


def _vm_processes(vm_root: Path) -> list[str]:
    """Processes (supervisors, qemu, virtiofsd) whose command line names ``vm_root``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                args = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(vm_root) in args:
                found.append(f"{entry.name}: {args[:200]}")
    return found


def _wait(predicate: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_two_pods_from_one_template_share_no_random_numbers_or_addresses(env: Env) -> None:
    cri = env.node.cri
    for name in ("tpl-a", "tpl-b"):
        pod = cri.run_pod(env.node.pod(host_network=False, hostname=name), runtime_handler="clear")
        env.cni.container_ids.append(pod)
        env.pods.append((pod, cri.create(pod, container_config("probe"), start=True)))
    seen = []
    for (pod, cid), name in zip(env.pods, ("tpl-a", "tpl-b"), strict=True):
        supervisor = json.loads((env.vm_root / pod[:16] / "supervisor.json").read_text())
        assert "loaded" in supervisor["figures"], "the VM was booted, not restored"
        uuid, boot_id, hostname, mac, noise, clock = (
            cri.exec(cid, ["sh", "-c", PROBE]).stdout.decode().split()
        )
        assert hostname == name
        assert abs(int(clock) - time.time()) < 120, "the guest clock was not set"
        ip = cri.pod_status(pod).network.ip
        seen.append((uuid, boot_id, mac, noise, ip))
    for first, second, what in zip(*seen, ("uuid", "boot_id", "MAC", "urandom", "IP"), strict=True):
        assert first != second, f"two pods from one template share their {what}: {first}"
    templates = [p for p in TEST_TEMPLATES.iterdir() if p.is_dir() and (p / "memory").exists()]
    assert templates, "no template was kept"


def test_a_restored_vm_gets_its_own_machine_id_and_a_working_root(env: Env) -> None:
    """Below crio: two VMs restored by the harness from the same template."""
    options = parse_options("clear", {})
    accel = choose_accel("auto", host_facts())
    # crio's own key (the guest kernel arguments a booted VM gets): the module's template.
    spec = handler_template(env.assets.kernel, env.assets.initrd, accel, options, node_lsm_args())

    async def two() -> list[str]:
        slot = TemplateSlot(TEST_TEMPLATES, spec, 600)
        slot.start()
        template = await slot.get()
        assert template is not None, slot.problem
        outs = []
        try:
            for n in range(2):
                run_dir = env.vm_root / f"harness{n}"
                vm = await VM.restore(
                    VMSpec(run_dir=run_dir, kernel=spec.kernel, initrd=spec.initrd), template
                )
                try:
                    done = await vm.run(["sh", "-c", "cat /etc/machine-id; crun --version"])
                    outs.append(done.stdout.decode())
                finally:
                    await vm.shutdown()
                    await vm.release()
                    shutil.rmtree(run_dir, ignore_errors=True)
        finally:
            await slot.close()
        return outs

    first, second = asyncio.run(two())
    assert first.split()[0] != second.split()[0]
    assert len(first.split()[0]) == 32 and "crun version" in first


def test_a_restored_pod_vm_outlives_a_crio_crash(env: Env) -> None:
    _, cid = env.pods[0]
    env.node.restart(signal.SIGKILL)
    assert env.node.cri.exec(cid, ["echo", "still here"]).stdout == b"still here\n"


def test_crio_killed_while_restoring_comes_back_clean(env: Env) -> None:
    cri = env.node.cri
    before = {p.name for p in env.vm_root.iterdir()}
    kept = _vm_processes(env.vm_root)
    crash(
        env.node,
        env.hold,
        "cache=always",  # the root's virtiofsd: the restore is under way
        lambda: cri.run_pod(env.node.pod(host_network=False), runtime_handler="clear"),
    )
    pods = {p.id for p in env.node.cri.pods()}
    assert pods == {pod for pod, _ in env.pods}
    assert {p.name for p in env.vm_root.iterdir()} == before
    assert sorted(p.split(":")[0] for p in _vm_processes(env.vm_root)) == sorted(
        p.split(":")[0] for p in kept
    )
    assert len(env.node.leftovers()["namespace pins"]) == len(env.pods)


def test_crio_killed_while_building_a_template_comes_back_clean(env: Env) -> None:
    vm_root = Path(tempfile.mkdtemp(prefix="crio-vmb-", dir="/tmp"))
    # The default place (runtime_root/templates): this crio builds its own template.
    node = start_node(
        {"crio.runtime.runtimes.clear": _handler(env.assets, vm_root, template_dir="")}
    )
    node.use_loopback_network()
    templates = vm_root / "templates"
    try:
        in_background(
            lambda: node.cri.run_pod(node.pod(host_network=False), runtime_handler="clear")
        )
        _wait(lambda: any(".build-" in p for p in _vm_processes(templates)), "the template's qemu")
        builders = [p.split(":")[0] for p in _vm_processes(templates)]

        def gone() -> None:
            _wait(lambda: not any(Path(f"/proc/{pid}").exists() for pid in builders), "qemu's end")

        node.restart(signal.SIGKILL, between=gone)
        _wait(lambda: not list(templates.glob("*.build-*")), "the stale build's removal")
        assert not _vm_processes(vm_root)
        assert not list(node.cri.pods())
    finally:
        try:
            stop_node(node)
        finally:
            shutil.rmtree(vm_root, ignore_errors=True)
