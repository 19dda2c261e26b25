"""How kpod shows crio's containers and pods: ``ps`` rows, ``inspect`` objects (Docker's names)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crio.errors import NotFoundError

if TYPE_CHECKING:
    from crio.kpod.node import Node
    from crio.oci.runtime import ContainerState as Live
    from crio.state.records import ContainerRecord, SandboxRecord

__all__ = [
    "Status",
    "container_row",
    "human_duration",
    "inspect_container",
    "inspect_pod",
    "pod_row",
    "rfc3339",
    "status_of",
]


def human_duration(seconds: float) -> str:
    """Docker's ``units.HumanDuration``: "Less than a second", "About a minute", "3 hours"."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    minutes, hours = seconds / 60, seconds / 3600
    if seconds < 60:
        return f"{int(seconds)} seconds"
    if int(minutes) == 1:
        return "About a minute"
    if minutes < 60:
        return f"{int(minutes)} minutes"
    if int(hours) == 1:
        return "About an hour"
    if hours < 48:
        return f"{int(hours)} hours"
    if hours < 24 * 7 * 2:
        return f"{int(hours // 24)} days"
    if hours < 24 * 30 * 2:
        return f"{int(hours // (24 * 7))} weeks"
    if hours < 24 * 365 * 2:
        return f"{int(hours // (24 * 30))} months"
    return f"{int(hours // (24 * 365))} years"


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as Docker's ``2024-01-02T03:04:05.123456789Z``."""
    if ns <= 0:
        return "0001-01-01T00:00:00Z"
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


@dataclass(frozen=True, slots=True)
class Status:
    """A container's state as Docker names it, from the record and the runtime together."""

    state: str  # created, running, paused, exited, unknown
    pid: int
    exit_code: int
    started_at: int
    finished_at: int
    reason: str
    message: str

    def text(self, now: float) -> str:
        """Docker's STATUS column: "Up 2 minutes (Paused)", "Exited (0) 3 seconds ago"."""
        if self.state in ("running", "paused"):
            up = human_duration(now - self.started_at / 1e9) if self.started_at else "Unknown"
            return f"Up {up}" + (" (Paused)" if self.state == "paused" else "")
        if self.state == "exited":
            ago = human_duration(now - self.finished_at / 1e9) if self.finished_at else "?"
            return f"Exited ({self.exit_code}) {ago} ago"
        return self.state.capitalize()


def status_of(ctr: ContainerRecord, live: Live) -> Status:
    """The runtime knows of exits crio has not recorded yet (crio down), and of pauses."""
    from crio.oci.runtime import State
    from crio.state.records import ContainerState

    if live.state is State.STOPPED or ctr.state is ContainerState.EXITED:
        unrecorded = live.state is State.STOPPED and ctr.state is not ContainerState.EXITED
        done = live if unrecorded else None
        return Status(
            "exited",
            0,
            done.exit_code if done else ctr.exit_code,
            ctr.started_at or (done.started_at if done else 0),
            done.finished_at if done else ctr.finished_at,
            done.reason if done else ctr.reason,
            done.message if done else ctr.message,
        )
    if live.state is State.RUNNING:
        state = "paused" if live.paused else "running"
        started = ctr.started_at or live.started_at
        return Status(state, live.pid or ctr.pid, 0, started, 0, "", "")
    if live.state is State.CREATED:
        return Status("created", 0, 0, 0, 0, "", "")
    return Status(ctr.state.value, ctr.pid, ctr.exit_code, ctr.started_at, 0, ctr.reason, "")


def _process(ctr: ContainerRecord) -> dict[str, Any]:
    try:
        with open(f"{ctr.bundle}/config.json", "rb") as handle:
            spec = json.load(handle)
    except (OSError, ValueError):
        return {}
    return spec if isinstance(spec, dict) else {}


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _ports(pod: SandboxRecord | None) -> str:
    if pod is None:
        return ""
    return ", ".join(
        f"{p.host_ip or '0.0.0.0'}:{p.host_port}->{p.container_port}/{p.protocol}"
        for p in pod.port_mappings
    )


async def _size(node: Node, ctr: ContainerRecord) -> tuple[int, int]:
    """(bytes in the container's own layer, bytes of its image) from the store."""
    store = await node.ctx.store()
    try:
        stored = await store.container(ctr.container_id)
        layer = await store.layer(stored.layer)
        own = await store.driver.diff_size(layer.id, layer.parent)
        image = await store.image_size(stored.image) if stored.image else 0
    except NotFoundError:
        return 0, 0
    return own, image


async def container_row(
    node: Node, ctr: ContainerRecord, *, no_trunc: bool = False, size: bool = False
) -> dict[str, Any]:
    """One ``kpod ps`` row: Docker's ``ps`` fields plus the pod's."""
    from crio.kpod.common import human_size

    status = status_of(ctr, await node.live(ctr))
    state = await node.state()
    try:
        pod: SandboxRecord | None = state.sandbox(ctr.pod_sandbox_id)
    except NotFoundError:
        pod = None
    spec = _process(ctr).get("process") or {}
    command = " ".join(spec.get("args") or [])
    now = time.time()
    row: dict[str, Any] = {
        "ID": ctr.container_id if no_trunc else ctr.container_id[:12],
        "Image": ctr.image,
        "Command": json.dumps(command if no_trunc else _ellipsis(command, 20), ensure_ascii=False),
        "CreatedAt": time.strftime(
            "%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(ctr.created_at / 1e9)
        ),
        "RunningFor": human_duration(now - ctr.created_at / 1e9) + " ago",
        "Ports": _ports(pod),
        "State": status.state,
        "Status": status.text(now),
        "Size": "",
        "Names": node.display_name(ctr),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(ctr.labels.items())),
        "Mounts": ",".join(m.container_path for m in ctr.mounts),
        "Pod": ctr.pod_sandbox_id if no_trunc else ctr.pod_sandbox_id[:12],
        "PodName": pod.name if pod else "",
        "Namespace": pod.namespace if pod else "",
        "Runtime": ctr.runtime_handler,
        "ExitCode": status.exit_code,
    }
    if size:
        own, image = await _size(node, ctr)
        row["Size"] = f"{human_size(own)} (virtual {human_size(own + image)})"
    return row


async def pod_row(node: Node, pod: SandboxRecord, *, no_trunc: bool = False) -> dict[str, Any]:
    """One ``kpod pods`` row."""
    state = await node.state()
    containers = [c for c in state.containers(pod.pod_sandbox_id) if not c.infra]
    return {
        "ID": pod.pod_sandbox_id if no_trunc else pod.pod_sandbox_id[:12],
        "Name": pod.name,
        "Namespace": pod.namespace,
        "Attempt": pod.attempt,
        "Status": "Ready" if pod.state.value == "ready" else "NotReady",
        "Created": human_duration(time.time() - pod.created_at / 1e9) + " ago",
        "CreatedAt": time.strftime(
            "%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(pod.created_at / 1e9)
        ),
        "Containers": len(containers),
        "Runtime": pod.runtime_handler,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(pod.labels.items())),
        "IPs": ",".join(pod.ips),
    }


async def inspect_container(node: Node, ctr: ContainerRecord) -> dict[str, Any]:
    """``docker container inspect``'s object for a crio container."""
    status = status_of(ctr, await node.live(ctr))
    spec = _process(ctr)
    process = spec.get("process") or {}
    args = list(process.get("args") or [])
    state = await node.state()
    try:
        pod: SandboxRecord | None = state.sandbox(ctr.pod_sandbox_id)
    except NotFoundError:
        pod = None
    store = await node.ctx.store()
    driver: Mapping[str, str] = {}
    try:
        stored = await store.container(ctr.container_id)
        driver = await store.driver.metadata(stored.layer)
    except NotFoundError:
        pass
    return {
        "Id": ctr.container_id,
        "Created": rfc3339(ctr.created_at),
        "Path": args[0] if args else "",
        "Args": args[1:],
        "State": {
            "Status": status.state,
            "Running": status.state in ("running", "paused"),
            "Paused": status.state == "paused",
            "Restarting": False,
            "OOMKilled": status.reason == "OOMKilled",
            "Dead": False,
            "Pid": status.pid if status.state in ("running", "paused") else 0,
            "ExitCode": status.exit_code,
            "Error": status.message,
            "StartedAt": rfc3339(status.started_at),
            "FinishedAt": rfc3339(status.finished_at),
            "Reason": status.reason,
        },
        "Image": ctr.image_ref,
        "ImageName": ctr.image,
        "Name": node.display_name(ctr),
        "RestartCount": ctr.attempt,
        "Pod": ctr.pod_sandbox_id,
        "PodName": pod.name if pod else "",
        "Namespace": pod.namespace if pod else "",
        "Runtime": ctr.runtime_handler,
        "Driver": store.driver.name,
        "LogPath": ctr.log_path,
        "Rootfs": ctr.rootfs,
        "BundlePath": ctr.bundle,
        "Mounts": [
            {
                "Type": "bind",
                "Source": m.host_path,
                "Destination": m.container_path,
                "Mode": "ro" if m.readonly else "",
                "RW": not m.readonly,
                "Propagation": m.propagation.name.lower(),
            }
            for m in ctr.mounts
        ],
        "Config": {
            "Hostname": spec.get("hostname", ""),
            "User": _user(process.get("user") or {}),
            "Env": list(process.get("env") or []),
            "Cmd": args,
            "WorkingDir": process.get("cwd", ""),
            "Tty": ctr.tty,
            "OpenStdin": ctr.stdin,
            "StdinOnce": ctr.stdin_once,
            "Labels": dict(ctr.labels),
            "Annotations": dict(ctr.annotations),
        },
        "GraphDriver": {"Name": store.driver.name, "Data": dict(driver)},
    }


def _user(user: Mapping[str, Any]) -> str:
    if not user:
        return ""
    return f"{user.get('uid', 0)}:{user.get('gid', 0)}"


async def inspect_pod(node: Node, pod: SandboxRecord) -> dict[str, Any]:
    """A pod sandbox as kpod shows it (CRI's PodSandboxStatus, with Docker-style names)."""
    state = await node.state()
    containers = [c for c in state.containers(pod.pod_sandbox_id) if not c.infra]
    lives = await asyncio.gather(*(node.live(c) for c in containers))
    return {
        "Id": pod.pod_sandbox_id,
        "Name": pod.name,
        "Namespace": pod.namespace,
        "Uid": pod.uid,
        "Attempt": pod.attempt,
        "State": "Ready" if pod.state.value == "ready" else "NotReady",
        "Created": rfc3339(pod.created_at),
        "RuntimeHandler": pod.runtime_handler,
        "Hostname": pod.hostname,
        "Labels": dict(pod.labels),
        "Annotations": dict(pod.annotations),
        "CgroupParent": pod.cgroup_parent,
        "LogDirectory": pod.log_directory,
        "InfraContainerId": pod.infra_container_id,
        "Network": {
            "Mode": pod.network_mode.name.lower(),
            "IPs": list(pod.ips),
            "PortMappings": [
                {
                    "HostIP": p.host_ip,
                    "HostPort": p.host_port,
                    "ContainerPort": p.container_port,
                    "Protocol": p.protocol,
                }
                for p in pod.port_mappings
            ],
        },
        "Containers": [
            {
                "Id": c.container_id,
                "Name": node.display_name(c),
                "State": status_of(c, live).state,
            }
            for c, live in zip(containers, lives, strict=True)
        ],
    }
