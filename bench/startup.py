#!/usr/bin/env python3
"""Start-up: ``crio`` and ``kpod`` commands, and the daemon until it serves, against Go peers.

Rounds alternate between the commands so that background load hits them
alike. Printed per command: median wall time and median CPU time (user +
system of the process and its children, less hit by load than wall time).
Peers: ``podman images`` for ``kpod images`` (same empty private store
layout), containerd until its socket answers for ``crio`` until its socket
answers. ``python -c pass`` is the interpreter's own floor.

Run as root: ``.venv/bin/python bench/startup.py [--rounds 9]``. Nothing
here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.daemon import CrioProcess

BIN = Path(sys.executable).parent
#: The commands' environment: bytecode is written and reused, as in any installation
#: (a shell with PYTHONDONTWRITEBYTECODE=1 would make every start compile crio anew).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def command(argv: list[str]) -> Callable[[], tuple[float, float]]:
    def run() -> tuple[float, float]:
        cpu, t0 = _children_cpu(), time.perf_counter()
        subprocess.run(
            argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
        )
        return (time.perf_counter() - t0) * 1000, _children_cpu() - cpu

    return run


def crio_until_serving() -> tuple[float, float]:
    process = CrioProcess()
    try:
        t0 = time.perf_counter()
        process.start("--log-level", "warn", env={"PYTHONDONTWRITEBYTECODE": ""})
        wall = (time.perf_counter() - t0) * 1000
        assert process.proc is not None
        used = _cpu_of(process.proc.pid)
        process.stop()
        return wall, used
    finally:
        process.cleanup()


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def containerd_until_serving(work: Path) -> Callable[[], tuple[float, float]]:
    def run() -> tuple[float, float]:
        base = Path(tempfile.mkdtemp(prefix="ctrd-", dir=work))
        config = base / "config.toml"
        config.write_text(
            f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
            f'[grpc]\n  address = "{base}/c.sock"\n[ttrpc]\n  address = "{base}/c.sock.ttrpc"\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{base}/opt"\n'
        )
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_serving(base / "c.sock", proc)
            wall = (time.perf_counter() - t0) * 1000
            used = _cpu_of(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
            subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True)
            shutil.rmtree(base, ignore_errors=True)
        return wall, used

    return run


def _wait_serving(socket: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if socket.exists():
            with grpc.insecure_channel(f"unix://{socket}") as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=1)
                    return
                except grpc.FutureTimeoutError:
                    pass
        time.sleep(0.005)
    raise RuntimeError(f"{socket} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--no-daemons", action="store_true", help="commands only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crio-startup-", dir="/tmp"))
    store = ["--root", str(work / "root"), "--runroot", str(work / "runroot")]
    podman = ["podman", "--root", str(work / "proot"), "--runroot", str(work / "prun")]
    runs: dict[str, Callable[[], tuple[float, float]]] = {
        "python -c pass": command([sys.executable, "-c", "pass"]),
        "crio version": command([str(BIN / "crio"), "version"]),
        "crio config --default": command(
            [str(BIN / "crio"), "--config-dir", str(work), "config", "--default"]
        ),
        "kpod version": command([str(BIN / "kpod"), "version"]),
        "kpod images": command([str(BIN / "kpod"), *store, "images"]),
    }
    if shutil.which("podman"):
        runs["podman images (peer)"] = command([*podman, "images"])
    if not args.no_daemons and os.geteuid() == 0:
        runs["crio until it serves"] = crio_until_serving
        if shutil.which("containerd"):
            runs["containerd until it serves (peer)"] = containerd_until_serving(work)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    try:
        for run in runs.values():
            run()  # warm: .pyc files, page cache
        for _ in range(args.rounds):
            for name, run in runs.items():
                samples[name].append(run())
    finally:
        subprocess.run([*podman, "system", "reset", "-f"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"# start-up, median of {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}; ms")
    print(f"{'command':<36}{'wall':>10}{'cpu':>10}")
    for name, values in samples.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"{name:<36}{wall:>10.0f}{cpu:>10.0f}")


if __name__ == "__main__":
    main()
