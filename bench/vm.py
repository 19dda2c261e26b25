"""What a pod VM costs: boot, exec and container start in the guest, against the host.

Usage (root): .venv/bin/python bench/vm.py [--boots 3] [--runs 20] [--pods 3]
[--only harness|restore|pods]

Pod figures (a real crio with handlers runc and clear on one CNI bridge,
busybox ``sleep`` per pod; rounds alternate between the two handlers),
medians in ms, clear/runc ratios: RunPodSandbox (for clear: boot-to-ready
of the pod VM), CreateContainer + StartContainer, ExecSync ``true`` round
trip, StopPodSandbox, RemovePodSandbox; and the accelerator.

Harness figures (runtime_clear.vm, no crio daemon), medians in ms:

- boot-to-ready: VM.boot until the agent's ``ready`` (supervisor, virtiofsd,
  qemu, kernel, initramfs, the host's python3 over virtiofs), with the guest's
  own uptime at ``ready`` and the accelerator named;
- exec round trip: ``true`` run in the guest through the agent, against
  the peer: ``true`` spawned on the host from the same event loop;
- container create+start: crun in the guest through the agent, against the
  peer: the same crun create+start of the same bundle on the host;
- shutdown: agent ``shutdown`` until the supervisor has reported the end.

Template figures (runtime_clear.template): the template's build (a boot
plus a save, once per key), then VM.restore until the restored agent has
made the guest this VM's, against VM.boot in the same run, with the steps
of a restore (supervisor: memory copy, qemu up, state loaded, running;
host: agent connected, guest restored) and the load average.

Pods through crio go to three handlers on one bridge: ``clear`` (restored
from its template), ``clearboot`` (``vm_template = false``) and runc.

Prints figures and ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crio_plugins.runtime_clear._guest_kernel import node_lsm_args
from crio_plugins.runtime_clear._initramfs import GUEST_SHARE
from crio_plugins.runtime_clear.accel import choose_accel, host_facts
from crio_plugins.runtime_clear.options import parse_options
from crio_plugins.runtime_clear.template import TemplateSlot, handler_template
from crio_plugins.runtime_clear.vm import VM, VMSpec
from support.vm import TEST_TEMPLATES, busybox_rootfs, vm_assets_or_skip


async def _ms(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return (time.perf_counter() - start) * 1000


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):9.1f}"


def _bundle(directory: Path, cid: str) -> Path:
    bundle = directory / cid
    busybox_rootfs(bundle / "rootfs")
    subprocess.run(["crun", "spec", "-b", str(bundle)], check=True, capture_output=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = ["sleep", "600"]
    spec["process"]["terminal"] = False
    spec["root"] = {"path": "rootfs", "readonly": False}
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


async def _host_crun(bundle: Path, root: Path, cid: str) -> None:
    async def crun(*args: str) -> None:
        # The container inherits crun's stdio: no pipes, or waiting for EOF never ends.
        proc = await asyncio.create_subprocess_exec(
            "crun", f"--root={root}", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if await proc.wait():
            raise RuntimeError(f"crun {args[0]} {cid} failed with {proc.returncode}")

    await crun("create", f"--bundle={bundle}", cid)
    await crun("start", cid)


async def _host_crun_cleanup(root: Path, cid: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "crun", f"--root={root}", "delete", "--force", cid,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await proc.wait()


async def harness(boots: int, runs: int) -> None:
    assets = vm_assets_or_skip()
    base = Path(tempfile.mkdtemp(prefix="crio-bench-vm-", dir="/tmp"))
    boot_ms: list[float] = []
    uptimes: list[float] = []
    shutdown_ms: list[float] = []
    accel = ""
    try:
        for n in range(boots):
            spec = VMSpec(run_dir=base / f"vm{n}", kernel=assets.kernel, initrd=assets.initrd)
            start = time.perf_counter()
            vm = await VM.boot(spec)
            boot_ms.append((time.perf_counter() - start) * 1000)
            uptimes.append(float(vm.ready["uptime"]) * 1000)
            accel = vm.accel
            if n < boots - 1:
                shutdown_ms.append(await _ms(vm.shutdown))
                await vm.release()
        # The last VM stays up for the exec and container figures.
        guest_exec = [await _ms(lambda: vm.run(["true"])) for _ in range(runs + 2)][2:]

        async def host_true() -> None:
            proc = await asyncio.create_subprocess_exec("true")
            await proc.wait()

        host_exec = [await _ms(host_true) for _ in range(runs + 2)][2:]
        guest_ctr, host_ctr = [], []
        host_root = base / "crun-root"
        for _ in range(max(3, runs // 4)):
            cid = f"b{uuid.uuid4().hex[:10]}"
            _bundle(spec.share, cid)
            bundle = f"{GUEST_SHARE}/{cid}"

            async def in_guest(cid: str = cid, bundle: str = bundle) -> None:
                await vm.call("create", container_id=cid, bundle=bundle)
                await vm.call("start", container_id=cid)

            guest_ctr.append(await _ms(in_guest))
            await vm.call("kill", container_id=cid, signal=9)
            await vm.call("wait", container_id=cid)
            await vm.call("delete", container_id=cid)
            hcid = f"h{cid}"
            hbundle = _bundle(base / "host-bundles", hcid)
            host_ctr.append(await _ms(lambda b=hbundle, c=hcid: _host_crun(b, host_root, c)))
            await _host_crun_cleanup(host_root, hcid)
        shutdown_ms.append(await _ms(vm.shutdown))
        await vm.release()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"pod VM harness ({accel.upper()}, {boots} boots, {runs} runs; medians in ms)")
    print(
        f"  boot-to-ready (host view)      {_median(boot_ms)}   runs: "
        + ", ".join(f"{v:.0f}" for v in boot_ms)
    )
    print(f"  guest uptime at ready          {_median(uptimes)}")
    print(f"  shutdown                       {_median(shutdown_ms)}")
    g, h = statistics.median(guest_exec), statistics.median(host_exec)
    print(f"  exec round trip  guest {g:9.1f}   host peer {h:7.1f}   ratio {g / h:6.1f}x")
    g, h = statistics.median(guest_ctr), statistics.median(host_ctr)
    print(f"  crun create+start guest {g:8.1f}   host peer {h:7.1f}   ratio {g / h:6.1f}x")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def restore(boots: int) -> None:
    """Cold boot against template restore, alternating, in one process."""
    assets = vm_assets_or_skip()
    base = Path(tempfile.mkdtemp(prefix="crio-bench-vmt-", dir="/tmp"))
    accel = choose_accel("auto", host_facts())
    # The kernel arguments crio gives a pod VM: the same template as crio's.
    spec = handler_template(assets.kernel, assets.initrd, accel, parse_options("b", {}),
                            node_lsm_args())  # fmt: skip
    slot = TemplateSlot(TEST_TEMPLATES, spec, 600)
    slot.start()
    started = time.perf_counter()
    template = await slot.get()
    prepared = time.perf_counter() - started
    if template is None:
        raise SystemExit(f"no template: {slot.problem}")
    boot_ms: list[float] = []
    restore_ms: list[float] = []
    steps: dict[str, list[float]] = {}
    loads = [_load()]
    try:
        for n in range(boots):
            vspec = VMSpec(run_dir=base / f"r{n}", kernel=assets.kernel, initrd=assets.initrd)
            start = time.perf_counter()
            vm = await VM.restore(vspec, template)
            restore_ms.append((time.perf_counter() - start) * 1000)
            figures = json.loads((vspec.run_dir / "supervisor.json").read_text())["figures"]
            for step, value in {**figures, **vm.steps}.items():
                steps.setdefault(step, []).append(
                    value * 1000 if step != "memory_copied" else value
                )
            steps.setdefault("guest restore op", []).append(vm.ready["restore_seconds"] * 1000)
            await vm.shutdown()
            await vm.release()
            bspec = VMSpec(run_dir=base / f"b{n}", kernel=assets.kernel, initrd=assets.initrd)
            start = time.perf_counter()
            vm = await VM.boot(bspec)
            boot_ms.append((time.perf_counter() - start) * 1000)
            await vm.shutdown()
            await vm.release()
            loads.append(_load())
    finally:
        await slot.close()
        shutil.rmtree(base, ignore_errors=True)
    facts = template.facts
    print(f"pod VM template ({template.spec.accel.upper()}, {boots} of each, alternating; ms)")
    print(f"  template: found or built in {prepared * 1000:.0f} (its build: boot+save "
          f"{facts.get('boot_seconds', 0) * 1000:.0f}, guest ready at {facts.get('guest_uptime')}s"
          f" uptime, saved state {facts.get('saved_bytes', 0) / 1024:.0f} KiB)")  # fmt: skip
    b, r = statistics.median(boot_ms), statistics.median(restore_ms)
    print(f"  cold boot to ready      {b:9.1f}   runs: " + ", ".join(f"{v:.0f}" for v in boot_ms))
    print(
        f"  restore to ready        {r:9.1f}   runs: " + ", ".join(f"{v:.0f}" for v in restore_ms)
    )
    print(f"  restore / boot          {r / b:9.2f}x")
    print("  restore steps (medians, ms from the start; supervisor steps from its own start):")
    for step, values in steps.items():
        if step == "memory_copied":
            print(f"    {'RAM copied (MiB)':22} {statistics.median(values) / 2**20:9.1f}")
        else:
            print(f"    {step:22} {statistics.median(values):9.1f}")
    print(f"  load average: {' -> '.join(loads)}")


POD_STEPS = (
    "RunPodSandbox",
    "Create+Start",
    "pod start",
    "2nd Create+Start",
    "ExecSync true",
    "StopPodSandbox",
    "RemovePodSandbox",
)


def _pod_round(node: Any, cni: Any, handler: str, runs: int, got: dict[str, list[float]]) -> None:
    from support.cri import container_config

    clock = time.perf_counter
    start = clock()
    pod = node.cri.run_pod(node.pod(host_network=False), runtime_handler=handler)
    got["RunPodSandbox"].append((clock() - start) * 1000)
    cni.container_ids.append(pod)
    start = clock()
    cid = node.cri.create(pod, container_config("b"), start=True)
    got["Create+Start"].append((clock() - start) * 1000)
    got["pod start"].append(got["RunPodSandbox"][-1] + got["Create+Start"][-1])
    # A second container in the same pod: what the first one paid once per pod (VM).
    start = clock()
    node.cri.create(pod, container_config("c"), start=True)
    got["2nd Create+Start"].append((clock() - start) * 1000)
    for _ in range(runs):
        start = clock()
        node.cri.exec(cid, ["true"])
        got["ExecSync true"].append((clock() - start) * 1000)
    start = clock()
    node.cri.stop_pod(pod)
    got["StopPodSandbox"].append((clock() - start) * 1000)
    start = clock()
    node.cri.remove_pod(pod)
    got["RemovePodSandbox"].append((clock() - start) * 1000)


def pods(rounds: int, runs: int) -> None:
    from support.cni import CNIEnv
    from support.node import start_node, stop_node

    assets = vm_assets_or_skip()
    vm_root = Path(tempfile.mkdtemp(prefix="crio-bench-vmr-", dir="/tmp"))
    clear = {
        "runtime_type": "vm",
        "runtime_root": str(vm_root),
        "kernel": str(assets.kernel),
        "initrd": str(assets.initrd),
        "boot_timeout": 600,
    }
    node = start_node(
        {
            "crio.runtime.runtimes.clear": clear,
            "crio.runtime.runtimes.clearboot": {**clear, "vm_template": False},
        }
    )
    cni = CNIEnv(node.base / "cni")
    cni.net_dir = node.base / "net.d"
    cni.write(cni.conflist(portmap=False))
    handlers = ("runc", "clear", "clearboot")
    figures: dict[str, dict[str, list[float]]] = {
        h: {step: [] for step in POD_STEPS} for h in handlers
    }
    loads = [_load()]
    try:
        # The first clear pod builds the template (once per key): not counted.
        _pod_round(node, cni, "clear", 1, {step: [] for step in POD_STEPS})
        for _ in range(rounds):
            for handler in handlers:
                _pod_round(node, cni, handler, runs, figures[handler])
            loads.append(_load())
    finally:
        try:
            stop_node(node)
        finally:
            cni.cleanup()
            shutil.rmtree(vm_root, ignore_errors=True)
    accel = choose_accel("auto", host_facts()).upper()
    print(f"pods through crio: clear (pod VM restored from a template, {accel}), clearboot "
          f"(booted) and runc, {rounds} pods each; ExecSync over {runs} runs per pod; "
          "medians in ms")  # fmt: skip
    print(f"  {'step':18} {'clear':>10} {'clearboot':>10} {'runc':>9} {'clear/boot':>11} "
          f"{'clear/runc':>11}")  # fmt: skip
    for step in POD_STEPS:
        r, c, b = (statistics.median(figures[h][step]) for h in handlers)
        print(f"  {step:18} {c:10.1f} {b:10.1f} {r:9.1f} {c / b:10.2f}x {c / r:10.1f}x")
    print(f"  load average: {' -> '.join(loads)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pods", type=int, default=3)
    parser.add_argument("--only", choices=("harness", "restore", "pods"))
    args = parser.parse_args()
    if args.only in (None, "harness"):
        asyncio.run(harness(args.boots, args.runs))
    if args.only in (None, "restore"):
        asyncio.run(restore(args.boots))
    if args.only in (None, "pods"):
        pods(args.pods, args.runs)


if __name__ == "__main__":
    main()
