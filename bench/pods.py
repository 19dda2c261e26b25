#!/usr/bin/env python3
"""Pod start and stop through CRI: crio against containerd, with the same runc, in one run.

Both daemons get private directories, their own CNI bridge and subnet
(bridge + host-local + portmap, the same conflist) and their own cgroup
parent; both run one busybox ``sleep`` container per pod. Rounds alternate
between the two so that background load hits both alike. Printed: median
and p90 of RunPodSandbox, CreateContainer, StartContainer, the whole start,
StopPodSandbox and RemovePodSandbox, with crio/containerd ratios; bare
``runc create`` + ``runc start`` of the same rootfs; the daemons' RSS idle
and with 50 pods; ListContainers with 500 containers.

Run as root: ``.venv/bin/python bench/pods.py [--pods 20] [--warmup 2]``.
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crio.api import api_pb2 as api
from support.cri import Cri, container_config, pod_config
from support.daemon import CrioProcess
from support.images import (
    busybox_rootfs_tar,
    digest,
    image_config,
    layer_tar,
    put_image,
    write_oci_layout,
)

BUSYBOX = "localhost/busybox:latest"
PAUSE = "localhost/pause:bench"
STEPS = (
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "start total",
    "StopPodSandbox",
    "RemovePodSandbox",
)


def _pause_layer() -> bytes:
    """A real pause process: Debian's static catatonit in pause mode."""
    catatonit = Path("/usr/bin/catatonit")
    if not catatonit.exists():
        sys.exit("bench/pods.py needs Debian's catatonit (make deb installs it)")
    return layer_tar({"pause": catatonit.read_bytes()}, modes={"pause": 0o755})


def _pause_config(base: bytes, pause: bytes) -> bytes:
    return image_config([digest(base), digest(pause)], cmd=[], Entrypoint=["/pause", "-P"])


def _cni_conflist(directory: Path, tag: str) -> dict[str, Any]:
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"
    doc = {
        "cniVersion": "1.0.0",
        "name": f"bench-{tag}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": f"bb{tag}",
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(directory / "ipam"),
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (directory / "net.d").mkdir(parents=True, exist_ok=True)
    (directory / "net.d" / "10-bench.conflist").write_text(json.dumps(doc))
    return doc


@dataclass
class Peer:
    name: str
    socket: Path
    pid: int
    cgroup_root: str
    bridge: str
    children: Callable[[], list[int]]
    stop: Callable[[], None]
    channel: grpc.Channel = field(init=False)
    cri: Cri = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.cri = Cri(self.channel)


# -- crio ----------------------------------------------------------------------


def start_crio(base: Path, extra: dict[str, dict[str, Any]] | None = None) -> Peer:
    import asyncio

    from crio.storage import Store

    tag = secrets.token_hex(3)
    _cni_conflist(base, tag)
    tables: dict[str, dict[str, Any]] = {
        "crio.network": {"network_dir": str(base / "net.d")},
        "crio.image": {"pause_image": PAUSE, "pause_command": "/pause"},
    }
    for table, keys in (extra or {}).items():
        tables.setdefault(table, {}).update(keys)
    process = CrioProcess(tables)

    async def seed() -> None:
        store = await Store.open(process.base / "root", process.base / "runroot")
        try:
            rootfs, pause = busybox_rootfs_tar(), _pause_layer()
            await put_image(store, [rootfs], name=BUSYBOX)
            await put_image(store, [rootfs, pause], name=PAUSE, config=_pause_config(rootfs, pause))
        finally:
            await store.close()

    asyncio.run(seed())
    process.start("--log-level", "warn")
    assert process.proc is not None

    def stop() -> None:
        process.stop()
        process.cleanup()

    return Peer(
        "crio",
        process.socket,
        process.proc.pid,
        f"/bench-crio-{tag}",
        f"bb{tag}",
        lambda: _pids_named("conmon", process.base),
        stop,
    )


def _pids_named(comm: str, marker: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            name = Path(f"/proc/{entry}/comm").read_text().strip()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if name.startswith(comm) and str(marker).encode() in cmdline:
            found.append(int(entry))
    return found


# -- containerd --------------------------------------------------------------------


def _containerd_config(base: Path) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[{cri}]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
        Root = "{base}/runc"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{base}/net.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""


def _oci_archive(directory: Path, layers: list[bytes], name: str, config: bytes | None) -> Path:
    layout = directory / name.replace("/", "_").replace(":", "_")
    write_oci_layout(layout, layers, config=config)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = name
    index["manifests"][0]["platform"] = {"architecture": "amd64", "os": "linux"}
    (layout / "index.json").write_text(json.dumps(index))
    archive = layout.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        for item in sorted(layout.rglob("*")):
            tar.add(item, arcname=str(item.relative_to(layout)), recursive=False)
    return archive


def start_containerd(base: Path) -> Peer:
    tag = secrets.token_hex(3)
    _cni_conflist(base, tag)
    config = base / "config.toml"
    config.write_text(_containerd_config(base))
    log = open(base / "containerd.log", "wb")  # noqa: SIM115 (kept open for the daemon)
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
    socket = base / "containerd.sock"
    deadline = time.monotonic() + 60
    while not socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"containerd did not start:\n{(base / 'containerd.log').read_text()[-3000:]}")
        time.sleep(0.05)
    rootfs, pause = busybox_rootfs_tar(), _pause_layer()
    for archive in (
        _oci_archive(base, [rootfs], BUSYBOX, None),
        _oci_archive(base, [rootfs, pause], PAUSE, _pause_config(rootfs, pause)),
    ):
        subprocess.run(
            ["ctr", "--address", str(socket), "-n", "k8s.io", "images", "import", str(archive)],
            check=True,
            capture_output=True,
        )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for shim in _pids_named("containerd-shim", base):
            os.kill(shim, 9)
        subprocess.run(["umount", "-R", "-l", str(base / "state")], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(base / "root")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

    return Peer(
        "containerd",
        socket,
        proc.pid,
        f"/bench-containerd-{tag}",
        f"bb{tag}",
        lambda: _pids_named("containerd-shim", base),
        stop,
    )


# -- measuring ---------------------------------------------------------------------


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


#: The pods' PID namespace mode: api.CONTAINER (the kubelet's default) or api.POD
#: (shareProcessNamespace: the pod needs an infra process as PID 1). Set by --share-pid.
PID_MODE = api.CONTAINER


def _pod(peer: Peer, host_network: bool) -> api.PodSandboxConfig:
    config = pod_config(host_network=host_network)
    config.linux.security_context.namespace_options.pid = PID_MODE
    config.linux.cgroup_parent = f"{peer.cgroup_root}/pod-{config.metadata.uid}"
    config.log_directory = f"/tmp/bench-logs/{peer.name}/{config.metadata.uid}"
    return config


def _container(name: str, seccomp: str) -> api.ContainerConfig:
    kind = {
        "unconfined": api.SecurityProfile.Unconfined,
        "runtime-default": api.SecurityProfile.RuntimeDefault,
    }[seccomp]
    security = api.LinuxContainerSecurityContext(seccomp=api.SecurityProfile(profile_type=kind))
    return container_config(name, ["sleep", "3600"], security=security)


def one_pod(peer: Peer, host_network: bool, seccomp: str) -> dict[str, float]:
    cri = peer.cri
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    pod_id = cri.run_pod(_pod(peer, host_network))
    t1 = time.perf_counter()
    cid = cri.create(pod_id, _container("c", seccomp))
    t2 = time.perf_counter()
    cri.start(cid)
    t3 = time.perf_counter()
    cri.stop_pod(pod_id)
    t4 = time.perf_counter()
    cri.remove_pod(pod_id)
    t5 = time.perf_counter()
    for step, start, end in zip(
        STEPS, (t0, t1, t2, t0, t3, t4), (t1, t2, t3, t3, t4, t5), strict=True
    ):
        times[step] = (end - start) * 1000
    return times


def bare_runc(base: Path, rounds: int) -> list[float]:
    """``runc create`` + ``runc start`` of the busybox rootfs, nothing else."""
    bundle = base / "bare"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    with tarfile.open(fileobj=__import__("io").BytesIO(busybox_rootfs_tar())) as tar:
        tar.extractall(rootfs)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"].update(terminal=False, args=["sleep", "3600"])
    tag = secrets.token_hex(3)
    spec["linux"]["cgroupsPath"] = f"/bench-bare-{tag}/c"
    (bundle / "config.json").write_text(json.dumps(spec))
    root = str(base / "bare-root")
    out = []
    for i in range(rounds):
        cid = f"bench-{tag}-{i}"
        t0 = time.perf_counter()
        subprocess.run(
            ["runc", f"--root={root}", "create", "--bundle", str(bundle), cid],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(["runc", f"--root={root}", "start", cid], check=True)
        out.append((time.perf_counter() - t0) * 1000)
        subprocess.run(["runc", f"--root={root}", "kill", cid, "KILL"], check=True)
        while (
            subprocess.run(
                ["runc", f"--root={root}", "delete", cid], capture_output=True
            ).returncode
            != 0
        ):
            time.sleep(0.01)
    _remove_cgroups(f"/bench-bare-{tag}")
    return out


def _remove_cgroups(root: str) -> None:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / root.lstrip("/")
        if top.is_dir():
            for sub in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    subprocess.run(["rmdir", str(sub)], capture_output=True)
            subprocess.run(["rmdir", str(top)], capture_output=True)


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return statistics.median(ordered), p90


def fill(peer: Peer, pods: int, per_pod: int, host_network: bool, seccomp: str) -> list[str]:
    ids = []
    for _ in range(pods):
        pod_id = peer.cri.run_pod(_pod(peer, host_network))
        ids.append(pod_id)
        for i in range(per_pod):
            peer.cri.create(pod_id, _container(f"c{i}", seccomp), start=True)
    return ids


def time_list(peer: Peer, calls: int = 30) -> tuple[float, int]:
    samples = []
    count = 0
    for _ in range(calls):
        t0 = time.perf_counter()
        count = len(peer.cri.containers())
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), count


def empty(peer: Peer) -> None:
    for pod in peer.cri.pods():
        peer.cri.stop_pod(pod.id)
        peer.cri.remove_pod(pod.id)


@contextmanager
def peers(
    base: Path, with_containerd: bool, crio_extra: dict[str, dict[str, Any]] | None = None
) -> Iterator[list[Peer]]:
    started: list[Peer] = []
    try:
        started.append(start_crio(base / "crio", crio_extra))
        if with_containerd:
            started.append(start_containerd(base / "containerd"))
        yield started
    finally:
        for peer in started:
            try:
                empty(peer)
            except grpc.RpcError as exc:
                print(f"# {peer.name}: cleanup: {exc.details()}", file=sys.stderr)
            peer.channel.close()
            peer.stop()
            _remove_cgroups(peer.cgroup_root)
            subprocess.run(["ip", "link", "del", peer.bridge], capture_output=True)
        shutil.rmtree("/tmp/bench-logs", ignore_errors=True)


def _row(label: str, cells: list[str]) -> str:
    return f"{label:<20}" + "".join(f"{c:>22}" for c in cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20, help="measured pods per daemon")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--host-network", action="store_true", help="skip CNI")
    parser.add_argument("--no-containerd", action="store_true")
    parser.add_argument(
        "--seccomp",
        choices=("unconfined", "runtime-default"),
        default="unconfined",
        help="the profile both daemons are asked for (the kubelet's default is unconfined)",
    )
    parser.add_argument(
        "--share-pid",
        action="store_true",
        help="pods share one PID namespace (shareProcessNamespace): an infra process each",
    )
    parser.add_argument("--rss-pods", type=int, default=50, help="0: skip RSS and ListContainers")
    parser.add_argument("--list-containers", type=int, default=500)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/pods.py needs root")
    global PID_MODE
    PID_MODE = api.POD if args.share_pid else api.CONTAINER
    base = Path(tempfile.mkdtemp(prefix="crio-bench-", dir="/tmp"))
    try:
        with peers(base, not args.no_containerd) as started:
            results: dict[str, dict[str, list[float]]] = {
                p.name: {s: [] for s in STEPS} for p in started
            }
            idle = {p.name: rss_kib([p.pid]) for p in started}
            for i in range(args.warmup + args.pods):
                for peer in started:
                    times = one_pod(peer, args.host_network, args.seccomp)
                    if i >= args.warmup:
                        for step, value in times.items():
                            results[peer.name][step].append(value)
            bare = bare_runc(base, args.pods + args.warmup)[args.warmup :]
            print(
                f"# {args.pods} pods per daemon after {args.warmup} warm-ups, "
                f"{'host network' if args.host_network else 'bridge CNI'}, seccomp {args.seccomp}, "
                f"{'shared PID namespace' if args.share_pid else 'PID namespace per container'}, "
                f"busybox sleep; load average {os.getloadavg()[0]:.1f}; ms"
            )
            names = [p.name for p in started]
            header = [f"{n} median/p90" for n in names] + (
                ["crio/containerd"] if len(names) == 2 else []
            )
            print(_row("step", header))
            for step in STEPS:
                cells, medians = [], []
                for name in names:
                    median, p90 = quantiles(results[name][step])
                    medians.append(median)
                    cells.append(f"{median:.1f} / {p90:.1f}")
                if len(medians) == 2:
                    cells.append(f"{medians[0] / medians[1]:.2f}")
                print(_row(step, cells))
            bare_median, bare_p90 = quantiles(bare)
            start_median = quantiles(results["crio"]["start total"])[0]
            print(_row("bare runc c+s", [f"{bare_median:.1f} / {bare_p90:.1f}"]))
            print(f"crio pod start / bare runc create+start: {start_median / bare_median:.2f}")

            if not args.host_network:
                network_section(started, results, args)
            if not args.rss_pods:
                return

            print(f"\n# RSS (KiB): idle, then with {args.rss_pods} pods of one running container")
            for peer in started:
                fill(peer, args.rss_pods, 1, args.host_network, args.seccomp)
                daemon = rss_kib([peer.pid])
                helpers = rss_kib(peer.children())
                helper = "conmon" if peer.name == "crio" else "shims"
                print(
                    f"{peer.name:<12} idle {idle[peer.name]:>8}   with pods {daemon:>8}   "
                    f"+ {len(peer.children())} {helper} {helpers:>8}"
                )
            per_pod = max(1, args.list_containers // args.rss_pods)
            print(
                f"\n# ListContainers with {args.rss_pods * per_pod} containers (median of 30 calls)"
            )
            for peer in started:
                for pod in peer.cri.pods():
                    for i in range(1, per_pod):
                        peer.cri.create(
                            pod.id, container_config(f"x{i}", ["sleep", "3600"]), start=True
                        )
                median, count = time_list(peer)
                print(f"{peer.name:<12} {median:8.2f} ms for {count} containers")
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- network part (net_cni; owned by the networking engineer) -----------------


def network_section(
    started: list[Peer], bridged: dict[str, dict[str, list[float]]], args: argparse.Namespace
) -> None:
    """What pod networking adds: the same pods with host networking, side by side.

    RunPodSandbox with the bridge CNI (the table above) minus RunPodSandbox
    with host networking is the pod network's cost: netns pinning and CNI
    ADD (bridge + host-local; portmap is left out by crio, since the pods
    have no hostPort). Likewise StopPodSandbox and CNI DEL. Both daemons run
    the same plugins with the same conflist shape.
    """
    host: dict[str, dict[str, list[float]]] = {p.name: {s: [] for s in STEPS} for p in started}
    for i in range(args.warmup + args.pods):
        for peer in started:
            times = one_pod(peer, True, args.seccomp)
            if i >= args.warmup:
                for step, value in times.items():
                    host[peer.name][step].append(value)
    print(f"\n# Network part: bridge CNI against host network, {args.pods} pods each; ms")
    cost: dict[str, tuple[float, float]] = {}
    for peer in started:
        rows = []
        for step in ("RunPodSandbox", "StopPodSandbox", "start total"):
            with_net = quantiles(bridged[peer.name][step])[0]
            without = quantiles(host[peer.name][step])[0]
            rows.append((step, with_net, without))
        (_, run_net, run_host), (_, stop_net, stop_host), (_, start_net, _) = rows
        cost[peer.name] = (run_net - run_host, stop_net - stop_host)
        print(
            f"{peer.name:<11} RunPodSandbox {run_net:6.1f} (host net {run_host:5.1f}): "
            f"network {run_net - run_host:5.1f} = {(run_net - run_host) / run_net:4.0%} of it, "
            f"{(run_net - run_host) / start_net:4.0%} of pod start; "
            f"StopPodSandbox {stop_net:6.1f} (host net {stop_host:5.1f})"
        )
    if len(cost) == 2:
        (crio_up, crio_down), (ctrd_up, ctrd_down) = cost["crio"], cost["containerd"]
        print(
            f"network cost crio/containerd: set-up {crio_up / ctrd_up:.2f}, "
            f"tear-down {crio_down / ctrd_down:.2f}"
        )


if __name__ == "__main__":
    main()
