"""crio with its default configuration, as ``make run`` starts it, on the node's shared paths.

Everything a test makes here is named or identified so that only it is
removed: the node's store (/var/lib/containers/storage), runtime roots
(/run/runc, /run/crun) and CNI network are shared with podman and whatever
else runs on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from crio.api import api_pb2 as api
from crio.api import api_pb2_grpc
from support.cri import Cri, EventWatch, container_config, pod_config

__all__ = [
    "CONFIG_FILES",
    "LOCK",
    "SOCKET",
    "DefaultCrio",
    "NodeRun",
    "Podman",
    "crio_made",
    "default_node_lock",
    "podman_running",
]

CRIO = str(Path(sys.executable).with_name("crio"))
#: Every helper and test that runs crio on the default paths holds this lock.
LOCK = "/tmp/crio-default-node.lock"
SOCKET = Path("/var/run/crio/crio.sock")
CONFIG_FILES = (Path("/etc/crio/crio.conf"), Path("/etc/crio/crio.conf.d"))
ROOT, RUNROOT = "/var/lib/containers/storage", "/run/containers/storage"
STATE_DIR = Path("/var/lib/crio")
RUN_DIR = Path("/run/crio")
RUNTIME_ROOTS = (Path("/run/runc"), Path("/run/crun"))


@contextlib.contextmanager
def default_node_lock(wait: float = 240.0) -> Iterator[None]:
    """Hold the default-node lock (exclusive flock), waiting at most ``wait`` seconds.

    :raises TimeoutError: another holder kept it all that time (its PID is named).
    """
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{LOCK} is still held after {wait:g} s") from None
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)


@dataclass
class DefaultCrio:
    """The crio of ``make run``: no flags, no configuration file, every default path."""

    log: Path
    proc: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None

    def start(self, timeout: float = 60.0) -> Cri:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [CRIO], stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"crio exited with {self.proc.returncode}:\n{self.log_text()}")
            if SOCKET.exists():
                channel = grpc.insecure_channel(f"unix://{SOCKET}")
                try:
                    grpc.channel_ready_future(channel).result(timeout=1)
                    self.channel = channel
                    return Cri(channel)
                except grpc.FutureTimeoutError:
                    channel.close()
            time.sleep(0.05)
        raise TimeoutError(f"crio did not serve in {timeout:g} s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal crio (by its PID) and wait for it to end; its exit status."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)
        return self.proc.returncode

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def images(self) -> api_pb2_grpc.ImageServiceStub:
        assert self.channel is not None
        return api_pb2_grpc.ImageServiceStub(self.channel)

    def check(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CRIO, "check", *args], capture_output=True, text=True, timeout=300)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Podman:
    """podman on its default storage and runtime roots; containers named by this run."""

    prefix: str = field(default_factory=lambda: f"crio-node-{secrets.token_hex(3)}")
    names: list[str] = field(default_factory=list)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["podman", "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: {done.stderr}")
        return done

    def run(self, runtime: str, image: str) -> str:
        """A detached ``sleep`` on ``runtime``; returns its full id."""
        name = f"{self.prefix}-{len(self.names)}-{runtime}"
        self.names.append(name)
        self("run", "-d", "--name", name, "--runtime", runtime, "--network", "none",
             "--pull", "never", "--ulimit", "nofile=20000:20000",
             "--ulimit", "nproc=20000:20000", image, "sleep", "600")  # fmt: skip
        return self("inspect", "--format", "{{.Id}}", name).stdout.strip()

    def status(self, name: str) -> str:
        return self("inspect", "--format", "{{.State.Status}}", name).stdout.strip()

    def remove_all(self) -> None:
        for name in self.names:
            self("rm", "--force", "--time", "0", name, check=False)


def seed_image(name: str) -> None:
    """busybox plus a layer of this run's own, so that the image (its id) is this run's."""
    from crio.storage import Store
    from support.images import busybox_rootfs_tar, digest, image_config, layer_tar, put_image

    async def seed() -> None:
        store = await Store.open(Path(ROOT), Path(RUNROOT))
        try:
            base, own = busybox_rootfs_tar(), layer_tar({"crio-node-tier": name})
            config = image_config([digest(base), digest(own)], cmd=["sh"])
            await put_image(store, [base, own], name=name, config=config)
        finally:
            await store.close()

    asyncio.run(seed())


def remove_image(name: str) -> None:
    """Remove this run's image from the node's store (crio stopped)."""
    from crio.errors import NotFoundError
    from crio.storage import Store

    async def remove() -> None:
        store = await Store.open(Path(ROOT), Path(RUNROOT))
        try:
            with contextlib.suppress(NotFoundError):
                await store.delete_image(name)
        finally:
            await store.close()

    asyncio.run(remove())


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle]


def _conmon_ids() -> set[str]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"conmon") and b"-c" in argv:
                found.add(argv[argv.index(b"-c") + 1].decode())
    return found


def crio_made(pod_ids: set[str], container_ids: set[str]) -> dict[str, list[str]]:
    """What is left on the node of these pods and containers (empty lists: nothing)."""
    ids = pod_ids | container_ids
    records = [
        str(path)
        for kind in ("sandboxes", "containers", "pending")
        for path in (STATE_DIR / kind).glob("*.json")
        if path.stem in ids
    ]
    store_file = Path(ROOT) / "overlay-containers" / "containers.json"
    stored = json.loads(store_file.read_text()) if store_file.exists() else []
    cni = Path(RUNROOT) / "crio-net" / "results"
    return {
        "mounts": [p for p in _mount_points() if any(i in p for i in ids)],
        "namespace pins": [str(p) for p in RUN_DIR.glob("ns/*/*") if p.name in pod_ids],
        "attach links": [str(RUN_DIR / c) for c in container_ids if os.path.lexists(RUN_DIR / c)],
        "exit files": [
            str(RUN_DIR / "exits" / c)
            for c in container_ids
            if os.path.lexists(RUN_DIR / "exits" / c)
        ],
        "records": records,
        "runtime state": [
            str(r / c) for r in RUNTIME_ROOTS for c in container_ids if (r / c).exists()
        ],
        "pod run directories": [
            str(p) for p in (Path(RUNROOT) / "crio-sandboxes").glob("*") if p.name in pod_ids
        ],
        "CNI cache": [str(p) for p in cni.glob("*") if any(i in p.name for i in pod_ids)],
        "store containers": [c["id"] for c in stored if c["id"] in container_ids],
        "conmons": sorted(_conmon_ids() & container_ids),
    }


@dataclass
class NodeRun:
    """The tier's crio, its client, podman, and every object this run made."""

    token: str
    crio: DefaultCrio
    podman: Podman
    cri: Cri | None = None
    pods: set[str] = field(default_factory=set)
    containers: set[str] = field(default_factory=set)
    podman_ids: dict[str, str] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return f"localhost/crio-node-tier:{self.token}"

    @property
    def scratch(self) -> Path:
        return Path(f"/tmp/crio-node-{self.token}")

    @property
    def cgroup_root(self) -> str:
        return f"/crio-node-{self.token}"

    def client(self) -> Cri:
        assert self.cri is not None, "crio is not running"
        return self.cri

    def run_pod(self, handler: str, host_network: bool = True) -> str:
        config = pod_config(host_network=host_network)
        config.linux.cgroup_parent = f"{self.cgroup_root}/pod-{config.metadata.uid}"
        config.log_directory = str(self.scratch / "logs" / config.metadata.uid)
        pod_id = self.client().run_pod(config, runtime_handler=handler)
        self.pods.add(pod_id)
        return pod_id

    def create(self, pod_id: str, name: str, command: list[str], start: bool = True) -> str:
        config = container_config(name, command, image=self.image)
        cid = self.client().create(pod_id, config, start=start)
        self.containers.add(cid)
        return cid

    def exit_seen(self, pod_id: str, name: str, code: int) -> api.ContainerStatus:
        """A container that exits with ``code`` at once; its status once its exit event came."""
        cri = self.client()
        with EventWatch(cri) as events:
            cid = self.create(pod_id, name, ["sh", "-c", f"exit {code}"])
            events.wait(cid, api.CONTAINER_STOPPED_EVENT)
        return cri.status(cid)

    def remove_pods(self) -> None:
        cri = self.client()
        for pod_id in sorted(self.pods):
            with contextlib.suppress(grpc.RpcError):
                cri.stop_pod(pod_id)
                cri.remove_pod(pod_id)

    def cleanup(self) -> None:
        """Remove this run's pods (starting crio again if it has to), podman containers,
        image, cgroups and files; stop crio."""
        try:
            if self.pods and not self.crio.running():
                with contextlib.suppress(Exception):
                    self.cri = self.crio.start()
            if self.crio.running():
                self.remove_pods()
        finally:
            self.podman.remove_all()
            if self.crio.running():
                self.crio.stop()
            remove_image(self.image)
            _remove_cgroups(self.cgroup_root)
            shutil.rmtree(self.scratch, ignore_errors=True)


def _remove_cgroups(root: str) -> None:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / root.lstrip("/")
        if not top.is_dir():
            continue
        for sub in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def podman_running(run: NodeRun) -> dict[str, Any]:
    """name -> status of every podman container of this run."""
    return {name: run.podman.status(name) for name in run.podman.names}
