"""What pod networking costs: net_cni's setup/teardown against the bare plugin execs.

Usage (root): .venv/bin/python bench/cni.py [--runs 20]

For each case, a private bridge and subnet, fresh netns per pod (not timed).
Figures are medians in ms over --runs after 2 warm-ups:

- crio: CNINetwork.setup / teardown (config check, record written before and
  after ADD, plugins run, result parsed), as RunPodSandbox and StopPodSandbox
  call them.
- floor: the same plugin executables run back to back with hand-made stdin,
  no checks, no record: what any runtime pays at least.
- always-portmap: the floor when portmap is run for every pod (as CRI-O and
  containerd do with this conflist), to show what skipping it saves.

Prints figures and ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crio.config import NetworkConfig
from crio.network import PodNetwork, PortMapping
from crio_plugins.net_cni import CNINetwork
from crio_plugins.net_cni.executor import PluginRunner
from crio_plugins.net_cni.protocol import plugin_stdin
from support.cni import CNIEnv

PLUGIN_DIRS = ["/usr/lib/cni"]


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return (time.perf_counter() - start) * 1000


class Floor:
    """The plugins run directly: bridge (+ portmap) ADD, then DEL in reverse."""

    def __init__(self, env: CNIEnv, portmap: bool) -> None:
        self.conf = env.conflist()
        self.portmap = portmap
        self.runner = PluginRunner(tuple(PLUGIN_DIRS))

    def _env(self, command: str, cid: str, netns: str) -> dict[str, str]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": netns,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": self.runner.cni_path,
            "CNI_ARGS": "IgnoreUnknown=1",
        }

    def _plugins(self) -> list[dict[str, object]]:
        return self.conf["plugins"][: 2 if self.portmap else 1]

    async def add(self, cid: str, netns: str, ports: list[dict[str, object]]) -> bytes:
        prev = None
        for plugin in self._plugins():
            stdin = plugin_stdin(self.conf["name"], "1.0.0", plugin, {"portMappings": ports}, prev)
            _, out, _ = await self.runner.run(
                str(plugin["type"]), self._env("ADD", cid, netns), stdin, "bench"
            )
            prev = json.loads(out)
        return json.dumps(prev).encode()

    async def delete(
        self, cid: str, netns: str, ports: list[dict[str, object]], res: bytes
    ) -> None:
        for plugin in reversed(self._plugins()):
            stdin = plugin_stdin(
                self.conf["name"], "1.0.0", plugin, {"portMappings": ports}, json.loads(res)
            )
            await self.runner.run(str(plugin["type"]), self._env("DEL", cid, netns), stdin, "b")


async def bench_crio(env: CNIEnv, runs: int, host_port: int) -> tuple[list[float], list[float]]:
    config = NetworkConfig(network_dir=str(env.net_dir), plugin_dirs=PLUGIN_DIRS)
    network = CNINetwork(config, env.runroot)
    await network.start()
    ups, downs = [], []
    for i in range(runs + 2):
        cid = env.new_id()
        ports = [PortMapping(container_port=80, host_port=host_port)] if host_port else []
        pod = PodNetwork(cid, "p", "ns", "u", env.netns(), port_mappings=ports)
        up = await _timed(lambda pod=pod: network.setup(pod))
        down = await _timed(lambda pod=pod: network.teardown(pod))
        if i >= 2:
            ups.append(up)
            downs.append(down)
    return ups, downs


async def bench_floor(
    env: CNIEnv, runs: int, host_port: int, portmap: bool
) -> tuple[list[float], list[float]]:
    floor = Floor(env, portmap)
    ports: list[dict[str, object]] = (
        [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}] if host_port else []
    )
    ups, downs = [], []
    for i in range(runs + 2):
        cid, netns = env.new_id(), env.netns()
        start = time.perf_counter()
        result = await floor.add(cid, netns, ports)
        up = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        await floor.delete(cid, netns, ports, result)
        down = (time.perf_counter() - start) * 1000
        if i >= 2:
            ups.append(up)
            downs.append(down)
    return ups, downs


def _median(values: list[float]) -> float:
    return statistics.median(values)


async def main(runs: int) -> None:
    rows: list[tuple[str, float, float]] = []
    cases: list[tuple[str, Callable[[CNIEnv], Awaitable[tuple[list[float], list[float]]]]]] = [
        ("crio, no hostPort (portmap skipped)", lambda e: bench_crio(e, runs, 0)),
        ("floor, bridge only", lambda e: bench_floor(e, runs, 0, portmap=False)),
        ("floor, always-portmap, no hostPort", lambda e: bench_floor(e, runs, 0, portmap=True)),
        ("crio, one hostPort", lambda e: bench_crio(e, runs, 31080)),
        ("floor, one hostPort", lambda e: bench_floor(e, runs, 31081, portmap=True)),
    ]
    for label, case in cases:
        base = Path(tempfile.mkdtemp(prefix="crio-bench-cni-", dir="/tmp"))
        env = CNIEnv(base)
        env.write(env.conflist())
        try:
            ups, downs = await case(env)
        finally:
            env.cleanup()
            shutil.rmtree(base, ignore_errors=True)
        rows.append((label, _median(ups), _median(downs)))
    print(f"CNI set-up and tear-down, medians of {runs} runs (ms)")
    print(f"{'case':40} {'ADD':>8} {'DEL':>8}")
    for label, up, down in rows:
        print(f"{label:40} {up:8.1f} {down:8.1f}")
    by = {label: (up, down) for label, up, down in rows}
    crio0, floor0 = by["crio, no hostPort (portmap skipped)"], by["floor, bridge only"]
    always = by["floor, always-portmap, no hostPort"]
    crio1, floor1 = by["crio, one hostPort"], by["floor, one hostPort"]
    print(
        f"crio / floor (no hostPort):        ADD {crio0[0] / floor0[0]:.2f}x  "
        f"DEL {crio0[1] / floor0[1]:.2f}x"
    )
    print(
        f"crio / always-portmap (no hostPort): ADD {crio0[0] / always[0]:.2f}x  "
        f"DEL {crio0[1] / always[1]:.2f}x"
    )
    print(
        f"crio / floor (one hostPort):       ADD {crio1[0] / floor1[0]:.2f}x  "
        f"DEL {crio1[1] / floor1[1]:.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
