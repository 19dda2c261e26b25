#!/usr/bin/env python3
"""A node at the kubelet's pod limit: List calls and daemon memory, crio against containerd.

Both daemons get the setup of ``bench/pods.py`` (private directories, the same
runc, one busybox ``sleep`` container per pod). Printed, for crio and
containerd in one run:

- the daemons' RSS idle, with ``--pods`` pods (110: the kubelet's default
  maximum; started ``--batch`` at a time, host network, as the kubelet's pod
  workers do), and for crio after a pull of a 100 MB, 5-layer image from a
  loopback registry (``--pull-mb``, 0 to skip);
- ListPodSandbox, ListContainers, ListContainerStats and ListPodSandboxStats
  with those pods: median and p90 of ``--calls`` calls, the daemons
  alternating call by call;
- CRI-O 1.26.4's figures from issue 16 (same machine, same pods; CRI-O cannot
  be built here) for reference.

Run as root: ``.venv/bin/python bench/scale.py [--pods 110] [--batch 10]``.
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pods import Peer, _container, _pod, peers, quantiles, rss_kib

from crio.api import api_pb2 as api
from crio.api import api_pb2_grpc

#: CRI-O 1.26.4 with 110 host-network pods on this machine (issue 16), in ms.
CRIO_126_MS = {"ListContainerStats": 10.0, "ListPodSandboxStats": 29.0}
#: CRI-O 1.26.4's daemon RSS with 110 pods (issue 16), in MB.
CRIO_126_RSS_MB = 85

CALLS: dict[str, Callable[[Peer], object]] = {
    "ListPodSandbox": lambda p: p.cri.rt.ListPodSandbox(api.ListPodSandboxRequest()),
    "ListContainers": lambda p: p.cri.rt.ListContainers(api.ListContainersRequest()),
    "ListContainerStats": lambda p: p.cri.rt.ListContainerStats(api.ListContainerStatsRequest()),
    "ListPodSandboxStats": lambda p: p.cri.rt.ListPodSandboxStats(api.ListPodSandboxStatsRequest()),
}


def start_pods(peer: Peer, count: int, batch: int) -> float:
    """Start ``count`` pods of one running container, ``batch`` at a time; seconds taken."""

    def one(_: int) -> None:
        pod_id = peer.cri.run_pod(_pod(peer, host_network=True))
        peer.cri.create(pod_id, _container("c", "unconfined"), start=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(batch) as pool:
        for first in range(0, count, batch):
            list(pool.map(one, range(first, min(count, first + batch))))
    return time.perf_counter() - started


def cpu_ms(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


Timings = dict[str, dict[str, list[float] | str]]


def time_calls(started: list[Peer], calls: int) -> tuple[Timings, Timings]:
    """Every List call ``calls`` times per daemon, alternating daemons: wall ms per call
    (or why refused), and the daemon's CPU ms over all the calls (less hit by load)."""
    out: Timings = {p.name: {} for p in started}
    cpu: Timings = {p.name: {} for p in started}
    for name, call in CALLS.items():
        for peer in started:
            try:
                call(peer)  # warm: the first call of a kind may load code or fill caches
                out[peer.name][name], cpu[peer.name][name] = [], []
            except grpc.RpcError as exc:
                out[peer.name][name] = cpu[peer.name][name] = f"refused ({exc.code().name})"
        for _ in range(calls):
            for peer in started:
                samples, used = out[peer.name][name], cpu[peer.name][name]
                if isinstance(samples, str) or isinstance(used, str):
                    continue
                c0, t0 = cpu_ms(peer.pid), time.perf_counter()
                call(peer)
                samples.append((time.perf_counter() - t0) * 1000)
                used.append(cpu_ms(peer.pid) - c0)
    return out, cpu


@contextmanager
def loopback_image(work: Path, total_mb: int) -> Iterator[str]:
    """A ``total_mb`` image in 5 layers (bench/pull.py's) in a loopback registry: its name."""
    from pull import build_image

    from support.registry import Registry, skopeo_push

    registry = Registry(base=work / "registry")
    try:
        source = build_image(work / "layout", total_mb)
        registry.start()
        skopeo_push(source, registry, "bench/big:v1")
        yield f"{registry.host}/bench/big:v1"
    finally:
        registry.cleanup()


def pull(peer: Peer, image: str) -> float:
    """PullImage through CRI; seconds taken."""
    stub = api_pb2_grpc.ImageServiceStub(peer.channel)
    t0 = time.perf_counter()
    stub.PullImage(api.PullImageRequest(image=api.ImageSpec(image=image)), timeout=600)
    return time.perf_counter() - t0


def _mb(kib: int) -> str:
    return f"{kib / 1024:6.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--batch", type=int, default=10, help="pods started at once")
    parser.add_argument("--calls", type=int, default=30, help="calls of each List RPC")
    parser.add_argument("--pull-mb", type=int, default=100, help="0: no pull")
    parser.add_argument("--no-containerd", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/scale.py needs root")
    base = Path(tempfile.mkdtemp(prefix="crio-scale-", dir="/tmp"))
    try:
        with contextlib.ExitStack() as stack:
            image, crio_extra = "", {}
            if args.pull_mb:
                image = stack.enter_context(loopback_image(base / "pull", args.pull_mb))
                crio_extra = {"crio.image": {"insecure_registries": [image.split("/")[0]]}}
            started = stack.enter_context(peers(base, not args.no_containerd, crio_extra))
            time.sleep(2)  # let start-up work settle before the idle sample
            idle = {p.name: rss_kib([p.pid]) for p in started}
            took = {p.name: start_pods(p, args.pods, args.batch) for p in started}
            time.sleep(2)
            full = {p.name: rss_kib([p.pid]) for p in started}
            times, cpu = time_calls(started, args.calls)
            after_calls = {p.name: rss_kib([p.pid]) for p in started}
            pulled = ""
            if args.pull_mb:
                crio = next(p for p in started if p.name == "crio")
                seconds = pull(crio, image)
                time.sleep(1)
                pulled = (
                    f"crio after pulling {args.pull_mb} MB in 5 layers ({seconds:.1f} s), "
                    f"with the {args.pods} pods: {_mb(rss_kib([crio.pid]))}"
                )
            report(started, args, idle, took, full, after_calls, (times, cpu), pulled)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def report(
    started: list[Peer],
    args: argparse.Namespace,
    idle: dict[str, int],
    took: dict[str, float],
    full: dict[str, int],
    after_calls: dict[str, int],
    timings: tuple[Timings, Timings],
    pulled: str,
) -> None:
    times, cpu = timings
    names = [p.name for p in started]
    load = os.getloadavg()[0]
    print(f"# {args.pods} pods (host network, {args.batch} at a time), load average {load:.1f}")
    print(f"{'daemon RSS':<22}" + "".join(f"{n:>16}" for n in names) + f"{'CRI-O 1.26':>16}")
    rows = (("idle", idle), (f"{args.pods} pods", full), ("after the List calls", after_calls))
    for label, values in rows:
        reference = f"{CRIO_126_RSS_MB:>13} MB" if label.endswith("pods") else f"{'':>16}"
        print(f"{label:<22}" + "".join(f"{_mb(values[n]):>16}" for n in names) + reference)
    print(f"{'pods started in':<22}" + "".join(f"{took[n]:>14.1f} s" for n in names))
    if pulled:
        print(pulled)
    print(f"\n# List calls with {args.pods} pods: median / p90 of {args.calls}, ms")
    header = "".join(f"{n:>20}" for n in names) + f"{'CRI-O 1.26':>12}"
    print(f"{'call':<22}{header}{'crio/CRI-O':>12}{'crio/ctrd':>11}")
    for call in CALLS:
        cells, medians = [], {}
        for name in names:
            samples = times[name][call]
            if isinstance(samples, str):
                cells.append(f"{samples:>20}")
                continue
            median, p90 = quantiles(samples)
            medians[name] = median
            cells.append(f"{median:>11.1f} / {p90:<6.1f}")
        reference = CRIO_126_MS.get(call)
        ratio = f"{medians['crio'] / reference:>12.2f}" if reference and "crio" in medians else ""
        peer = (
            f"{medians['crio'] / medians['containerd']:>11.2f}"
            if "containerd" in medians and "crio" in medians
            else ""
        )
        ref_cell = f"{reference:>12.0f}" if reference else f"{'':>12}"
        print(f"{call:<22}{''.join(cells)}{ref_cell}{ratio or '':>12}{peer}")
    print(f"\n# the daemon's CPU time per call (all threads, mean of {args.calls}), ms")
    for call in CALLS:
        cells = []
        for name in names:
            used = cpu[name][call]
            mean = used if isinstance(used, str) else f"{sum(used) / len(used):.1f}"
            cells.append(f"{mean:>20}")
        print(f"{call:<22}{''.join(cells)}")


if __name__ == "__main__":
    main()
