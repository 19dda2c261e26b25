"""Pod and container records: what crio remembers about every object it acknowledged.

Records are frozen; a change is a new record (``dataclasses.replace``) that
:class:`crio.state.store.StateStore` writes durably before the RPC replies.
They serialise to plain JSON objects (``to_json``/``from_json``) whose keys
are CRI's field names, so that a record on disk reads like the RPC that made it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crio.network import PortMapping
from crio.oci.container import Mount, Resources
from crio.oci.runtime import NamespaceMode, PodNamespaces

__all__ = [
    "ContainerRecord",
    "ContainerState",
    "DnsConfig",
    "SandboxRecord",
    "SandboxState",
    "container_name_key",
    "sandbox_name_key",
]

#: Bumped when a record's JSON changes incompatibly.
RECORD_VERSION = 1


class SandboxState(enum.Enum):
    READY = "ready"
    NOTREADY = "notready"


class ContainerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """CRI ``DNSConfig``: what the pod's resolv.conf was written from."""

    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def sandbox_name_key(name: str, namespace: str, uid: str, attempt: int) -> str:
    """The reserved name of a pod: unique per (name, namespace, uid, attempt)."""
    return f"k8s_POD_{name}_{namespace}_{uid}_{attempt}"


def container_name_key(name: str, attempt: int, pod: SandboxRecord) -> str:
    """The reserved name of a container: unique per pod and (name, attempt)."""
    return f"k8s_{name}_{pod.name}_{pod.namespace}_{pod.uid}_{attempt}"


@dataclass(frozen=True, slots=True)
class SandboxRecord:
    """One pod sandbox as crio acknowledged it.

    ``run_dir`` holds the pod's files (hostname, hosts, resolv.conf, its
    /dev/shm mount point) and is the runtime's to fill as well.
    """

    pod_sandbox_id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    runtime_handler: str
    created_at: int
    run_dir: str
    state: SandboxState = SandboxState.READY
    hostname: str = ""
    log_directory: str = ""
    cgroup_parent: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    network_mode: NamespaceMode = NamespaceMode.POD
    pid_mode: NamespaceMode = NamespaceMode.CONTAINER
    ipc_mode: NamespaceMode = NamespaceMode.POD
    namespaces: PodNamespaces = field(default_factory=PodNamespaces)
    ips: tuple[str, ...] = ()
    port_mappings: tuple[PortMapping, ...] = ()
    dns: DnsConfig = field(default_factory=DnsConfig)
    sysctls: Mapping[str, str] = field(default_factory=dict)
    privileged: bool = False
    #: The infra (pause) container, when the pod has one.
    infra_container_id: str = ""

    @property
    def name_key(self) -> str:
        return sandbox_name_key(self.name, self.namespace, self.uid, self.attempt)

    @property
    def host_network(self) -> bool:
        return self.network_mode is NamespaceMode.NODE

    def to_json(self) -> dict[str, Any]:
        return {"kind": "sandbox", "version": RECORD_VERSION, **_encode(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SandboxRecord:
        return _decode(cls, data)


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    """One container as crio acknowledged it.

    ``bundle`` is the container's own directory (config.json, conmon's
    files: ``ctl`` FIFO, ``attach`` socket through the attach dir, ``oom``);
    ``rootfs`` is where its root filesystem is mounted while it exists.
    """

    container_id: str
    pod_sandbox_id: str
    name: str
    attempt: int
    runtime_handler: str
    created_at: int
    bundle: str
    image: str
    image_ref: str = ""
    user_specified_image: str = ""
    rootfs: str = ""
    state: ContainerState = ContainerState.CREATED
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    log_path: str = ""
    mounts: tuple[Mount, ...] = ()
    resources: Resources = field(default_factory=Resources)
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    #: The pod's infra (pause) container: hidden from ListContainers.
    infra: bool = False
    #: Its config.json has poststop hooks: the runtime's delete (which runs them) must
    #: come before the bundle and the rootfs go.
    poststop_hooks: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"kind": "container", "version": RECORD_VERSION, **_encode(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerRecord:
        return _decode(cls, data)


# ---------------------------------------------------------------------------
# JSON encoding of the records (explicit: enums by value, dataclasses by field)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    return value


def _decode(cls: type[Any], data: Mapping[str, Any]) -> Any:
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _decode_value(hints[f.name], data[f.name])
    return cls(**kwargs)


@functools.cache
def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode_value(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode(hint, value)
    if origin is tuple:
        inner = args[0] if args else Any
        return tuple(_decode_value(inner, v) for v in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        inner = args[1] if len(args) == 2 else Any
        return {k: _decode_value(inner, v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        for arm in args:
            if arm is not type(None):
                return _decode_value(arm, value)
    return value
