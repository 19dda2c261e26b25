"""What a container is asked to be: CRI's ContainerConfig as frozen dataclasses.

The server layer turns the proto messages into these at the RPC boundary;
:mod:`crio.oci.spec` turns them, with the image's config and the pod's
context, into an OCI ``config.json``. Field names are CRI's.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crio.oci.caps import ALL_CAPABILITIES, capabilities_from_mask
from crio.oci.runtime import NamespaceMode, PodNamespaces

__all__ = [
    "Capabilities",
    "ContainerRequest",
    "Device",
    "HugepageLimit",
    "ImageConfig",
    "Mount",
    "PodContext",
    "ProfileType",
    "Propagation",
    "Resources",
    "SecurityContext",
    "SecurityProfile",
    "SpecDefaults",
]


class Propagation(enum.Enum):
    """CRI ``MountPropagation``."""

    PRIVATE = 0
    HOST_TO_CONTAINER = 1
    BIDIRECTIONAL = 2


@dataclass(frozen=True, slots=True)
class Mount:
    """A host path bind-mounted into the container."""

    container_path: str
    host_path: str
    readonly: bool = False
    selinux_relabel: bool = False
    propagation: Propagation = Propagation.PRIVATE


@dataclass(frozen=True, slots=True)
class Device:
    """A host device node (or a directory of them) made visible in the container."""

    container_path: str
    host_path: str
    permissions: str = "rwm"


@dataclass(frozen=True, slots=True)
class HugepageLimit:
    page_size: str
    limit: int


@dataclass(frozen=True, slots=True)
class Resources:
    """CRI ``LinuxContainerResources``; 0 or empty means "not set"."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    unified: Mapping[str, str] = field(default_factory=dict)
    memory_swap_limit_in_bytes: int = 0


class ProfileType(enum.Enum):
    """CRI ``SecurityProfile.ProfileType``."""

    RUNTIME_DEFAULT = 0
    UNCONFINED = 1
    LOCALHOST = 2


@dataclass(frozen=True, slots=True)
class SecurityProfile:
    profile_type: ProfileType = ProfileType.RUNTIME_DEFAULT
    localhost_ref: str = ""


@dataclass(frozen=True, slots=True)
class Capabilities:
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()
    add_ambient_capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SecurityContext:
    """CRI ``LinuxContainerSecurityContext``.

    ``seccomp`` None means the request named no profile: crio then applies
    RuntimeDefault, unless ``seccomp_use_default_when_empty`` is false
    (:attr:`SpecDefaults.seccomp_default_when_empty`): then it runs unconfined,
    as the CRI text says.
    """

    capabilities: Capabilities = field(default_factory=Capabilities)
    privileged: bool = False
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.CONTAINER
    ipc: NamespaceMode = NamespaceMode.POD
    target_id: str = ""
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    readonly_rootfs: bool = False
    supplemental_groups: tuple[int, ...] = ()
    no_new_privs: bool = False
    #: None: the default masked (read-only) paths; a tuple (even empty) replaces them.
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    seccomp: SecurityProfile | None = None


@dataclass(frozen=True, slots=True)
class ContainerRequest:
    """CRI ``ContainerConfig`` (Linux parts)."""

    name: str
    attempt: int = 0
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    log_path: str = ""
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    resources: Resources = field(default_factory=Resources)
    security: SecurityContext = field(default_factory=SecurityContext)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an OCI image config (``config`` object) a container inherits."""

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    stop_signal: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_oci(cls, config: Mapping[str, object] | None) -> ImageConfig:
        """Build from an image config document's ``config`` object (None: empty)."""
        raw = dict(config or {})

        def strings(key: str) -> tuple[str, ...]:
            value = raw.get(key) or ()
            return tuple(str(v) for v in value)  # type: ignore[union-attr]

        labels = raw.get("Labels") or {}
        return cls(
            user=str(raw.get("User") or ""),
            env=strings("Env"),
            entrypoint=strings("Entrypoint"),
            cmd=strings("Cmd"),
            working_dir=str(raw.get("WorkingDir") or ""),
            stop_signal=str(raw.get("StopSignal") or ""),
            labels={str(k): str(v) for k, v in labels.items()},  # type: ignore[union-attr]
        )


@dataclass(frozen=True, slots=True)
class PodContext:
    """What a container takes from its pod.

    ``files_dir`` holds the pod's ``hostname``, ``hosts`` and ``resolv.conf``;
    ``shm_path`` is bind-mounted at /dev/shm.
    """

    pod_sandbox_id: str
    name: str
    namespace: str
    uid: str
    hostname: str
    namespaces: PodNamespaces
    network_mode: NamespaceMode
    pid_mode: NamespaceMode
    ipc_mode: NamespaceMode
    cgroup_parent: str
    files_dir: str
    shm_path: str
    privileged: bool = False
    runtime_handler: str = ""


@dataclass(frozen=True, slots=True)
class SpecDefaults:
    """Node-wide settings from ``[crio.runtime]`` that every spec starts from."""

    capabilities: tuple[str, ...] = (
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "KILL",
    )
    env: tuple[str, ...] = ()
    ulimits: tuple[str, ...] = ("nofile=20000:20000",)
    pids_limit: int = 0
    #: Path of a JSON profile for RuntimeDefault; empty: crio's built-in one.
    seccomp_profile: str = ""
    #: A container whose request names no seccomp profile gets RuntimeDefault (else none).
    seccomp_default_when_empty: bool = True
    #: The lowest oom_score_adj crio may give (its own: lowering needs CAP_SYS_RESOURCE).
    min_oom_score_adj: int = 0
    #: Whether the host runs the unified cgroup v2 hierarchy only.
    cgroup_v2: bool = False
    #: Whether the host accounts swap (cgroup v1 memsw), so that swap can be capped.
    swap_accounting: bool = False
    #: Huge page sizes the host has ("2MB", "1GB"); limits for others are left out.
    hugepage_sizes: tuple[str, ...] = ()
    privileged_without_host_devices: bool = False
    #: The capabilities crio can give (its own bounding set); "ALL" means these.
    available_capabilities: tuple[str, ...] = ALL_CAPABILITIES

    @classmethod
    def from_host(cls, **settings: Any) -> SpecDefaults:
        """Defaults with the host facts read from /proc and /sys (blocking)."""
        try:
            with open("/proc/self/oom_score_adj") as handle:
                own = int(handle.read().strip() or 0)
        except OSError:
            own = 0
        sizes = []
        with contextlib.suppress(OSError):
            for entry in sorted(os.listdir("/sys/kernel/mm/hugepages")):
                kb = int(entry.removeprefix("hugepages-").removesuffix("kB"))
                sizes.append(_page_size_name(kb))
        available = ALL_CAPABILITIES
        with contextlib.suppress(OSError, ValueError, StopIteration):
            with open("/proc/self/status") as handle:
                line = next(x for x in handle if x.startswith("CapBnd:"))
            available = capabilities_from_mask(int(line.split()[1], 16))
        cgroup_v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        swap = cgroup_v2 or os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
        facts: dict[str, Any] = {
            "min_oom_score_adj": own,
            "hugepage_sizes": tuple(sizes),
            "cgroup_v2": cgroup_v2,
            "swap_accounting": swap,
            "available_capabilities": available,
        }
        return cls(**{**facts, **settings})


def _page_size_name(kb: int) -> str:
    for unit, size in (("GB", 1 << 20), ("MB", 1 << 10)):
        if kb % size == 0:
            return f"{kb // size}{unit}"
    return f"{kb}KB"
