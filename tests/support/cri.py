"""A small CRI client for tests and benches: configs as the kubelet sends them, and calls.

cri = Cri(channel)
pod = cri.run_pod(pod_config("web", host_network=True), runtime_handler="crun")
cid = cri.create(pod, container_config("c", ["sleep", "1000"]), start=True)
cri.exec(cid, ["id"]).stdout
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from crio.api import api_pb2 as api
from crio.api import api_pb2_grpc

__all__ = [
    "BUSYBOX_IMAGE",
    "PAUSE_IMAGE",
    "Cri",
    "EventWatch",
    "container_config",
    "pod_config",
    "rpc_error",
    "seed_images",
    "wait_until",
    "watch_events",
]

BUSYBOX_IMAGE = "localhost/busybox:latest"


def pod_config(
    name: str = "",
    *,
    host_network: bool = True,
    pid: int = api.CONTAINER,
    ipc: int = api.POD,
    log_directory: str | Path = "",
    cgroup_parent: str = "",
    hostname: str = "",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    sysctls: Mapping[str, str] | None = None,
    dns: api.DNSConfig | None = None,
    privileged: bool = False,
    port_mappings: Sequence[api.PortMapping] = (),
) -> api.PodSandboxConfig:
    """A pod as the kubelet describes it; a random name and uid unless given."""
    name = name or f"pod-{secrets.token_hex(3)}"
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(
            name=name, namespace="crio-test", uid=secrets.token_hex(8), attempt=0
        ),
        hostname=hostname or ("" if host_network else name),
        log_directory=str(log_directory),
        dns_config=dns,
        port_mappings=list(port_mappings),
        labels=dict(labels or {}),
        annotations=dict(annotations or {}),
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            sysctls=dict(sysctls or {}),
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(
                    network=api.NODE if host_network else api.POD, pid=pid, ipc=ipc
                ),
                privileged=privileged,
            ),
        ),
    )


def container_config(
    name: str,
    command: Sequence[str] = ("sleep", "3600"),
    *,
    image: str = BUSYBOX_IMAGE,
    args: Sequence[str] = (),
    pid: int = api.CONTAINER,
    log_path: str = "",
    labels: Mapping[str, str] | None = None,
    envs: Mapping[str, str] | None = None,
    mounts: Sequence[api.Mount] = (),
    resources: api.LinuxContainerResources | None = None,
    security: api.LinuxContainerSecurityContext | None = None,
    **fields: Any,
) -> api.ContainerConfig:
    security = security or api.LinuxContainerSecurityContext()
    if not security.HasField("namespace_options"):
        security.namespace_options.CopyFrom(api.NamespaceOption(pid=pid))
    return api.ContainerConfig(
        metadata=api.ContainerMetadata(name=name),
        image=api.ImageSpec(image=image),
        command=list(command),
        args=list(args),
        log_path=log_path or f"{name}/0.log",
        labels=dict(labels or {}),
        envs=[api.KeyValue(key=k, value=v) for k, v in (envs or {}).items()],
        mounts=list(mounts),
        linux=api.LinuxContainerConfig(resources=resources, security_context=security),
        **fields,
    )


def rpc_error(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """Call and return the RpcError it must raise."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{call} succeeded but an error was expected")


class Cri:
    """RuntimeService calls with the kubelet's sequence built in."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.rt = api_pb2_grpc.RuntimeServiceStub(channel)
        self.configs: dict[str, api.PodSandboxConfig] = {}

    def run_pod(self, config: api.PodSandboxConfig, runtime_handler: str = "") -> str:
        reply = self.rt.RunPodSandbox(
            api.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        )
        self.configs[reply.pod_sandbox_id] = config
        return reply.pod_sandbox_id

    def create(self, pod_id: str, config: api.ContainerConfig, *, start: bool = False) -> str:
        reply = self.rt.CreateContainer(
            api.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=config, sandbox_config=self.configs.get(pod_id)
            )
        )
        if start:
            self.start(reply.container_id)
        return reply.container_id

    def start(self, container_id: str) -> None:
        self.rt.StartContainer(api.StartContainerRequest(container_id=container_id))

    def stop(self, container_id: str, timeout: int = 0) -> None:
        self.rt.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=timeout))

    def remove(self, container_id: str) -> None:
        self.rt.RemoveContainer(api.RemoveContainerRequest(container_id=container_id))

    def status(self, container_id: str) -> api.ContainerStatus:
        return self.rt.ContainerStatus(api.ContainerStatusRequest(container_id=container_id)).status

    def pod_status(self, pod_id: str) -> api.PodSandboxStatus:
        return self.rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status

    def exec(
        self, container_id: str, cmd: Sequence[str], timeout: int = 10
    ) -> api.ExecSyncResponse:
        return self.rt.ExecSync(
            api.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
        )

    def stop_pod(self, pod_id: str) -> None:
        self.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))

    def remove_pod(self, pod_id: str) -> None:
        self.rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    def pods(self) -> list[api.PodSandbox]:
        return list(self.rt.ListPodSandbox(api.ListPodSandboxRequest()).items)

    def pod_info(self, pod_id: str) -> dict[str, Any]:
        """The verbose PodSandboxStatus's ``info`` (namespaces, infraContainerId ...)."""
        request = api.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
        return dict(json.loads(self.rt.PodSandboxStatus(request).info["info"]))

    def containers(self, **filters: Any) -> list[api.Container]:
        flt = api.ContainerFilter(**filters)
        return list(self.rt.ListContainers(api.ListContainersRequest(filter=flt)).containers)

    def remove_everything(self) -> None:
        for pod in self.pods():
            self.stop_pod(pod.id)
            self.remove_pod(pod.id)


PAUSE_IMAGE = "localhost/pause:test"
#: A pause process for tests: PID 1 of a shared PID namespace that ends on TERM.
PAUSE_SCRIPT = "#!/bin/sh\ntrap 'exit 0' TERM INT\nwhile :; do sleep 3600 & wait; done\n"


def seed_images(root: Path | str, runroot: Path | str) -> None:
    """Put the busybox image and a busybox-based pause image in a store (blocking)."""
    import asyncio

    from crio.storage import Store
    from support.images import busybox_rootfs_tar, digest, image_config, layer_tar, put_image

    async def seed() -> None:
        store = await Store.open(Path(root), Path(runroot))
        try:
            base = busybox_rootfs_tar()
            await put_image(store, [base], name=BUSYBOX_IMAGE)
            pause = layer_tar({"pause": PAUSE_SCRIPT}, modes={"pause": 0o755})
            config = image_config([digest(base), digest(pause)], cmd=["/pause"])
            await put_image(store, [base, pause], name=PAUSE_IMAGE, config=config)
        finally:
            await store.close()

    asyncio.run(seed())


class EventWatch:
    """GetContainerEvents opened before an action, read until the expected event."""

    def __init__(self, cri: Cri, timeout: float = 60.0) -> None:
        self._cri = cri
        before = self._before = self._streams(cri)
        self._stream = cri.rt.GetContainerEvents(api.GetEventsRequest(), timeout=timeout)
        # The server subscribes when its handler first runs: wait for that, so that
        # an event caused right after this returns cannot slip past the stream.
        wait_until(lambda: self._streams(cri) > before, what="the event stream is open")

    @staticmethod
    def _streams(cri: Cri) -> int:
        info = cri.rt.Status(api.StatusRequest(verbose=True)).info
        return int(info.get("containerEventStreams", "0"))

    def wait(self, container_id: str, kind: int) -> api.ContainerEventResponse:
        for event in self._stream:
            if event.container_id == container_id and event.container_event_type == kind:
                return event
        raise AssertionError(f"event stream ended before event {kind} of {container_id}")

    def close(self) -> None:
        """End the stream, and wait until the server has let go of it too."""
        self._stream.cancel()
        wait_until(lambda: self._streams(self._cri) <= self._before, what="the stream ended")

    def __enter__(self) -> EventWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def watch_events(cri: Cri, timeout: float = 60.0) -> EventWatch:
    return EventWatch(cri, timeout)


def wait_until(condition: Any, timeout: float = 30.0, what: str = "") -> None:
    """Poll ``condition()`` until it is true (for effects no event announces, e.g. log writes)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:g} s: {what or condition}")
        time.sleep(0.02)
