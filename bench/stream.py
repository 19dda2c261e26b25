"""Streaming: crio's exec round trip and port-forward throughput against containerd's.

Usage (root): .venv/bin/python bench/stream.py [--runs 50] [--megabytes 256]

Both daemons run here with private directories: crio (runc) and containerd
1.6 with its CRI plugin (io.containerd.runc.v2, the kubelet's streaming
server code). Each gets the same busybox image, a host-network pod and a container
serving zeros on a free port. The client for both is the same
tests/support/spdy_client.py, behaving like spdystream (no flow control).

- exec: Exec RPC, connect to the URL, run `true`, read the v4 status;
  median over --runs after 3 warm-ups, in ms.
- port-forward: PortForward RPC, then --megabytes from a listener inside the
  pod (busybox nc + dd) to the client, in MB/s; best of 3.

Prints figures and ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from crio.api import api_pb2 as api
from crio.api import api_pb2_grpc
from support.cri import (
    BUSYBOX_IMAGE,
    PAUSE_IMAGE,
    PAUSE_SCRIPT,
    container_config,
    pod_config,
    seed_images,
)
from support.daemon import CrioProcess
from support.images import busybox_rootfs_tar, digest, image_config, layer_tar, write_oci_layout
from support.spdy_client import SpdyClient, exec_session

LOOPBACK_NET = '{"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}'
# The pod's data source: every connection gets N bytes of zeros.
SOURCE = "#!/bin/sh\nexec dd if=/dev/zero bs=65536 count={blocks} 2>/dev/null\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Containerd:
    """containerd with its own root, state, socket and CNI directory."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="crio-bench-ctrd-", dir="/tmp"))
        self.socket = self.base / "containerd.sock"
        (self.base / "net.d").mkdir()
        (self.base / "net.d" / "10-lo.conflist").write_text(LOOPBACK_NET)
        config = f"""
version = 2
root = "{self.base}/root"
state = "{self.base}/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "{free_port()}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{self.base}/net.d"
"""
        (self.base / "config.toml").write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.base / "containerd.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(self.base / "config.toml")], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError((self.base / "containerd.log").read_text()[-3000:])
            time.sleep(0.05)
        for name, layers, config in _images():
            self._import(name, layers, config)

    def _import(self, name: str, layers: list[bytes], config: bytes) -> None:
        layout = self.base / f"image-{secrets.token_hex(3)}"
        write_oci_layout(layout, layers, config)
        index = json.loads((layout / "index.json").read_text())
        index["manifests"][0]["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name,
        }
        (layout / "index.json").write_text(json.dumps(index))
        archive = layout.with_suffix(".tar")
        with tarfile.open(archive, "w") as tar:
            for item in layout.iterdir():
                tar.add(item, arcname=item.name)
        subprocess.run(
            ["ctr", "-a", str(self.socket), "-n", "k8s.io", "images", "import", str(archive)],
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        subprocess.run(["umount", "-R", str(self.base / "root")], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def _images() -> list[tuple[str, list[bytes], bytes]]:
    base = busybox_rootfs_tar()
    pause = layer_tar({"pause": PAUSE_SCRIPT}, modes={"pause": 0o755})
    busybox_config = image_config([digest(base)])
    pause_config = json.loads(image_config([digest(base), digest(pause)]))
    pause_config.setdefault("config", {})["Entrypoint"] = ["/pause"]
    return [
        (BUSYBOX_IMAGE, [base], busybox_config),
        (PAUSE_IMAGE, [base, pause], json.dumps(pause_config).encode()),
    ]


class Subject:
    """One daemon's pod and container, reached over CRI."""

    def __init__(self, name: str, socket_path: Path) -> None:
        self.name = name
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.cgroup = f"/crio-bench-{secrets.token_hex(3)}"
        self.logs = tempfile.mkdtemp(prefix="crio-bench-logs-")
        self.pod = ""

    def setup(self, megabytes: int, seccomp: str) -> None:
        # Host network: containerd wants an eth0 in a pod network, and a bridge per
        # daemon would add set-up that both would pay alike.
        config = pod_config(host_network=True)
        self.port = free_port()
        config.linux.cgroup_parent = self.cgroup
        config.log_directory = self.logs
        self.pod = self.rt.RunPodSandbox(api.RunPodSandboxRequest(config=config)).pod_sandbox_id
        blocks = megabytes * 1024 * 1024 // 65536
        script = SOURCE.format(blocks=blocks).replace("\n", "\\n")
        serve = f"exec nc -ll -p {self.port} -e /tmp/src"
        command = ["sh", "-c", f"printf '{script}' > /tmp/src && chmod +x /tmp/src && {serve}"]
        # Both daemons get the same seccomp profile: crio applies RuntimeDefault when
        # none is named, containerd 1.6 none at all, and runc compiles it on every exec.
        kind = {"unconfined": api.SecurityProfile.Unconfined}.get(
            seccomp, api.SecurityProfile.RuntimeDefault
        )
        security = api.LinuxContainerSecurityContext(seccomp=api.SecurityProfile(profile_type=kind))
        created = self.rt.CreateContainer(
            api.CreateContainerRequest(
                pod_sandbox_id=self.pod,
                config=container_config("bench", command, security=security),
                sandbox_config=config,
            )
        )
        self.cid = created.container_id
        self.rt.StartContainer(api.StartContainerRequest(container_id=self.cid))

    async def exec_true(self) -> float:
        start = time.perf_counter()
        request = api.ExecRequest(container_id=self.cid, cmd=["true"], stdout=True, stderr=True)
        url = (await asyncio.to_thread(self.rt.Exec, request)).url
        outcome = await exec_session(url)
        elapsed = (time.perf_counter() - start) * 1000
        assert outcome.exit_code == 0, (self.name, outcome)
        return elapsed

    async def download(self, size: int) -> float:
        request = api.PortForwardRequest(pod_sandbox_id=self.pod, port=[self.port])
        url = (await asyncio.to_thread(self.rt.PortForward, request)).url
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        try:
            headers = {"port": str(self.port), "requestID": "0"}
            error = await client.open_stream({**headers, "streamType": "error"})
            await error.close()
            start = time.perf_counter()
            data = await client.open_stream({**headers, "streamType": "data"})
            got = 0
            while chunk := await data.read():
                got += len(chunk)
            elapsed = time.perf_counter() - start
            if got != size:
                raise RuntimeError(
                    f"{self.name}: got {got} of {size} bytes: {await error.read_all()!r}"
                )
            return size / elapsed / 1e6
        finally:
            await client.close()

    def close(self) -> None:
        if not self.pod:
            self.channel.close()
            return
        for call, request in (
            (self.rt.StopPodSandbox, api.StopPodSandboxRequest(pod_sandbox_id=self.pod)),
            (self.rt.RemovePodSandbox, api.RemovePodSandboxRequest(pod_sandbox_id=self.pod)),
        ):
            try:
                call(request)
            except grpc.RpcError as exc:
                print(f"{self.name}: cleanup: {exc.details()}", file=sys.stderr)
        self.channel.close()

    def remove_leftovers(self) -> None:
        """The pod's cgroup parent (containerd leaves it) and the log directory."""
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / self.cgroup.lstrip("/")
            if top.is_dir():
                for sub in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if sub.is_dir():
                        sub.rmdir()
                top.rmdir()
        shutil.rmtree(self.logs, ignore_errors=True)


async def measure(subject: Subject, runs: int, megabytes: int) -> dict[str, float]:
    for _ in range(3):
        await subject.exec_true()
    latencies = [await subject.exec_true() for _ in range(runs)]
    size = megabytes * 1024 * 1024
    for _ in range(100):  # the listener may still be starting
        try:
            rates = [await subject.download(size) for _ in range(3)]
            break
        except RuntimeError as exc:
            if "0 of" not in str(exc):
                raise
            await asyncio.sleep(0.05)
    else:
        raise RuntimeError(f"{subject.name}: nothing listens on {subject.port}")
    return {"exec_ms": statistics.median(latencies), "forward_mbs": max(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument(
        "--seccomp", choices=("unconfined", "runtime-default"), default="unconfined",
        help="the containers' seccomp profile, the same for both daemons",
    )  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/stream.py needs root (it runs crio and containerd)")
    crio = CrioProcess({"crio.image": {"pause_image": PAUSE_IMAGE, "pause_command": "/pause"}})
    (crio.base / "net.d" / "10-lo.conflist").write_text(LOOPBACK_NET)
    containerd = Containerd()
    subjects: list[Subject] = []
    try:
        seed_images(crio.base / "root", crio.base / "runroot")
        crio.start()
        containerd.start()
        for name, path in (("crio", crio.socket), ("containerd", containerd.socket)):
            subjects.append(Subject(name, path))
            subjects[-1].setup(args.megabytes, args.seccomp)
        results = {s.name: asyncio.run(measure(s, args.runs, args.megabytes)) for s in subjects}
    finally:
        for subject in subjects:
            subject.close()
        crio.stop()
        crio.cleanup()
        containerd.stop()
        for subject in subjects:
            subject.remove_leftovers()
    ours, peer = results["crio"], results["containerd"]
    print(f"seccomp {args.seccomp} for both")
    print(f"exec `true` round trip, median of {args.runs} (ms):")
    print(f"  crio {ours['exec_ms']:.1f}   containerd {peer['exec_ms']:.1f}   "
          f"ratio crio/containerd {ours['exec_ms'] / peer['exec_ms']:.2f}")  # fmt: skip
    print(f"port-forward {args.megabytes} MB pod->client, best of 3 (MB/s):")
    print(f"  crio {ours['forward_mbs']:.0f}   containerd {peer['forward_mbs']:.0f}   "
          f"ratio crio/containerd {ours['forward_mbs'] / peer['forward_mbs']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
