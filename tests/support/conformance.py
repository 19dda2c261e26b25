"""One crio for the CRI conformance cases, with runc, crun and a pod VM handler side by side.

A case gets a :class:`Case` for one handler. ``case.pod()`` is the handler's
shared pod, which every case can use (a pod VM boots once for them all): it
is privileged (privileged containers may run in it; others are not
affected), shares its PID namespace (containers ask for the pod's or their
own), and has a hostname and a namespaced sysctl. A case that needs
something else asks for a pod of its own shape (``case.pod(fresh=True,
...)``). Every container a case creates, and every fresh pod, is removed
when the case ends, so the next case finds the shared pod empty.

The node is untrusted by default (``default_workload_trust = "untrusted"``,
``runtime_untrusted_workload = "clear"``), as a mixed node of 2017 was: a pod
that names no handler runs in a VM unless it asks for host namespaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from crio.api import api_pb2 as api
from support.cri import container_config
from support.node import Node, start_node, stop_node

__all__ = [
    "HANDLERS",
    "USER_IMAGE",
    "VM_HANDLER",
    "Case",
    "Cluster",
    "start_cluster",
    "stop_cluster",
]

VM_HANDLER = "clear"
HANDLERS = ("runc", "crun", VM_HANDLER)
#: MiB per pod VM: enough for the cases' containers, small enough for 20 VMs at once.
VM_MEMORY = 256
#: A pod VM's calls under TCG on a loaded machine: generous, never a measurement.
SLOW_CALL = 600.0
#: The shared pod of every handler.
POD_HOSTNAME = "conformance"
POD_SYSCTLS = {"net.ipv4.ping_group_range": "0 0"}
SHARED_POD: dict[str, Any] = {
    "privileged": True,
    "pid": api.POD,
    "hostname": POD_HOSTNAME,
    "sysctls": POD_SYSCTLS,
}


@dataclass
class Cluster:
    """The package's crio and the pods its cases share."""

    node: Node
    vm_root: Path
    guest_release: str
    #: Why the VM handler cannot run here ("" when it can).
    no_vm: str = ""
    #: The shared pod of each handler, once made.
    shared: dict[str, str] = field(default_factory=dict)

    @property
    def cri(self) -> Any:
        return self.node.cri

    def unexpected_errors(self) -> list[str]:
        """Log lines of RPCs that failed with an exception crio did not raise on purpose."""
        text = self.node.crio.log_text()
        return [line for line in text.splitlines() if "unexpected error" in line]


#: An image whose config names a user by name, whose /etc/group lists that user in a
#: second group, and which declares a volume.
USER_IMAGE = "localhost/busybox-user:latest"
USER_IMAGE_GROUP = b"root:x:0:\ndaemon:x:1:\nuser1:x:1000:\nstaff:x:50:user1\nnogroup:x:65534:\n"


def _seed(root: Path, runroot: Path) -> None:
    import asyncio

    from crio.storage import Store
    from support.images import busybox_rootfs_tar, digest, image_config, layer_tar, put_image

    async def seed() -> None:
        store = await Store.open(root, runroot)
        try:
            base = busybox_rootfs_tar()
            extra = layer_tar(
                {"etc/group": USER_IMAGE_GROUP, "data/seed": b"from the image\n"},
                dirs=["data"],
                modes={"data": 0o1777},
            )
            config = image_config(
                [digest(base), digest(extra)],
                cmd=["sleep", "3600"],
                User="user1",
                Volumes={"/data": {}},
            )
            await put_image(store, [base, extra], name=USER_IMAGE, config=config)
        finally:
            await store.close()

    asyncio.run(seed())


def start_cluster(vm_assets: Any, no_vm: str = "") -> Cluster:
    """crio with runc, crun and (given its assets) the VM handler; pods on a loopback network."""
    vm_root = Path(tempfile.mkdtemp(prefix="crio-cvm-", dir="/tmp"))
    tables: dict[str, dict[str, Any]] = {}
    if vm_assets is not None:
        tables = {
            "crio.runtime": {
                "default_workload_trust": "untrusted",
                "runtime_untrusted_workload": VM_HANDLER,
            },
            f"crio.runtime.runtimes.{VM_HANDLER}": {
                "runtime_type": "vm",
                "runtime_root": str(vm_root),
                "kernel": str(vm_assets.kernel),
                "initrd": str(vm_assets.initrd),
                "memory": VM_MEMORY,
                "boot_timeout": 600,
            },
        }
    node = start_node(tables, seed=_seed)
    node.use_loopback_network()
    release = vm_assets.kernel_release if vm_assets is not None else ""
    return Cluster(node, vm_root, release, no_vm)


def stop_cluster(cluster: Cluster) -> None:
    try:
        stop_node(cluster.node)
    finally:
        # A pod VM outlives crio by design: if the run was cut short, stop ours here.
        orphans = _stop_supervisors(cluster.vm_root)
        leftovers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                     if str(cluster.vm_root) in line]  # fmt: skip
        for line in reversed(leftovers):
            subprocess.run(["umount", "-l", line.split()[4]], capture_output=True, check=False)
        shutil.rmtree(cluster.vm_root, ignore_errors=True)
        assert not orphans and not leftovers, (orphans, leftovers)


def _stop_supervisors(vm_root: Path) -> list[int]:
    """SIGTERM (and wait for) the VM supervisors whose command line names ``vm_root``."""
    marker = str(vm_root).encode()
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        if marker in cmdline and b"supervisor.py" in cmdline:
            found.append(int(entry))
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGTERM)
    for pid in found:
        for _ in range(600):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
    return found


class Case:
    """One conformance case on one handler: its pods, its containers, its clean-up."""

    def __init__(self, cluster: Cluster, handler: str) -> None:
        self.cluster = cluster
        self.handler = handler
        self.node = cluster.node
        self.cri = cluster.node.cri
        self._containers: list[str] = []
        self._pods: list[str] = []

    @property
    def in_vm(self) -> bool:
        return self.handler == VM_HANDLER

    def pod(self, *, fresh: bool = False, **shape: Any) -> str:
        """The handler's shared pod; with ``fresh``, a pod of ``shape`` for this case alone.

        :param shape: ``node.pod`` keywords; the pod network unless ``host_network``.
        """
        if not fresh:
            assert not shape, "only a fresh pod has a shape of its own"
            shared = self.cluster.shared.get(self.handler)
            if shared is None:
                config = self.node.pod(host_network=False, **SHARED_POD)
                shared = self.cri.run_pod(config, runtime_handler=self.handler)
                self.cluster.shared[self.handler] = shared
            return shared
        shape.setdefault("host_network", False)
        pod_id = self.cri.run_pod(self.node.pod(**shape), runtime_handler=self.handler)
        self._pods.append(pod_id)
        return pod_id

    def create(self, pod_id: str, config: api.ContainerConfig, *, start: bool = False) -> str:
        """CreateContainer (and StartContainer); the name and log path get a unique suffix."""
        suffix = secrets.token_hex(3)
        config.metadata.name = f"{config.metadata.name}-{suffix}"
        if config.log_path:
            config.log_path = f"{config.metadata.name}/0.log"
        cid = self.cri.create(pod_id, config)
        self._containers.append(cid)
        if start:
            self.cri.start(cid)
        return cid

    def run(
        self,
        security: api.LinuxContainerSecurityContext | None = None,
        command: Sequence[str] = ("sleep", "3600"),
        name: str = "c",
        **fields: Any,
    ) -> str:
        """A running container in this handler's shared pod (``fields``: container_config's)."""
        config = container_config(name, command, security=security, **fields)
        return self.create(self.pod(), config, start=True)

    def exec(self, cid: str, cmd: Sequence[str], timeout: int = 60) -> api.ExecSyncResponse:
        return self.cri.exec(cid, cmd, timeout=timeout)

    def cleanup(self) -> None:
        failed = []
        for cid in reversed(self._containers):
            try:
                self.cri.rt.RemoveContainer(
                    api.RemoveContainerRequest(container_id=cid), timeout=SLOW_CALL
                )
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.NOT_FOUND:
                    failed.append(f"RemoveContainer {cid}: {exc.code().name}: {exc.details()}")
        for pod_id in self._pods:
            try:
                self.cri.rt.StopPodSandbox(
                    api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=SLOW_CALL
                )
                self.cri.rt.RemovePodSandbox(
                    api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=SLOW_CALL
                )
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.NOT_FOUND:
                    failed.append(f"pod {pod_id}: {exc.code().name}: {exc.details()}")
        # A removal that fails leaves its object in the shared pod for the next case.
        assert not failed, failed
