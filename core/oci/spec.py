"""config.json from a CRI container request, its image and its pod.

:func:`build_spec` is the one entry point. It reads the host (the rootfs's
/etc/passwd, mount sources, device nodes, a Localhost seccomp profile), so
callers run it in a worker thread; everything else here is pure.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from crio.errors import ConfigError, InvalidRequestError
from crio.oci.caps import ALL_CAPABILITIES, resolve_capabilities
from crio.oci.container import (
    ContainerRequest,
    ImageConfig,
    PodContext,
    ProfileType,
    SpecDefaults,
)
from crio.oci.mounts import (
    DEFAULT_DEVICE_RULES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    MountPoint,
    bind_mounts,
    default_mounts,
    device_entries,
    host_devices,
    sort_mounts,
)
from crio.oci.resources import oci_resources, oom_score_adj
from crio.oci.runtime import NamespaceMode
from crio.oci.seccomp import runtime_default_profile
from crio.oci.user import ProcessUser, resolve_user, secure_join

__all__ = [
    "DEFAULT_PATH",
    "OCI_VERSION",
    "build_spec",
    "cgroups_path",
    "container_args",
    "container_env",
    "parse_rlimits",
    "parse_signal",
]

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_RLIMIT = re.compile(r"^([a-z]+)=(-?\d+):(-?\d+)$")
_RLIMIT_NAMES = {
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
    "nproc", "rss", "rtprio", "rttime", "sigpending", "stack", "as",
}  # fmt: skip


def container_args(request: ContainerRequest, image: ImageConfig) -> list[str]:
    """Kubernetes' rule: command replaces ENTRYPOINT (and drops CMD), args replace CMD.

    :raises InvalidRequestError: when neither the request nor the image gives a command.
    """
    if request.command:
        args = [*request.command, *request.args]
    elif request.args:
        args = [*image.entrypoint, *request.args]
    else:
        args = [*image.entrypoint, *image.cmd]
    if not args or not args[0]:
        raise InvalidRequestError(
            f"container {request.name}: command: neither the request nor the image "
            "names a command to run"
        )
    return args


def container_env(
    request: ContainerRequest, image: ImageConfig, defaults: SpecDefaults, hostname: str, home: str
) -> list[str]:
    """default_env, then the image's, then the request's; PATH, HOSTNAME, HOME, TERM filled in."""
    env: dict[str, str] = {}
    for item in (*defaults.env, *image.env):
        key, _, value = item.partition("=")
        if key:
            env[key] = value
    for i, (key, value) in enumerate(request.envs):
        if not key or "=" in key:
            raise InvalidRequestError(f"envs[{i}].key: {key!r} is not a variable name")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH.partition("=")[2])
    if hostname:
        env.setdefault("HOSTNAME", hostname)
    env.setdefault("HOME", home)
    if request.tty:
        env.setdefault("TERM", "xterm")
    return [f"{key}={value}" for key, value in env.items()]


def parse_rlimits(ulimits: tuple[str, ...]) -> list[dict[str, Any]]:
    """``default_ulimits`` entries ("nofile=20000:20000") as OCI rlimits."""
    out = []
    for item in ulimits:
        match = _RLIMIT.match(item.strip())
        if not match or match.group(1) not in _RLIMIT_NAMES:
            raise ConfigError(
                f"{item!r} is not NAME=SOFT:HARD with a known rlimit name",
                key="crio.runtime.default_ulimits",
            )
        soft, hard = int(match.group(2)), int(match.group(3))
        out.append({"type": f"RLIMIT_{match.group(1).upper()}", "soft": soft, "hard": hard})
    return out


def parse_signal(name: str) -> int:
    """An image's StopSignal ("SIGQUIT", "QUIT", "3", "" for SIGTERM) as a number.

    :raises InvalidRequestError: for a name that is not a signal.
    """
    text = name.strip().upper()
    if not text:
        return int(signal.SIGTERM)
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        full = text if text.startswith("SIG") else f"SIG{text}"
        try:
            return int(signal.Signals[full])
        except KeyError:
            pass
    raise InvalidRequestError(f"image config StopSignal: {name!r} is not a signal")


def cgroups_path(cgroup_parent: str, container_id: str) -> str:
    """The container's ``cgroupsPath`` under its pod's cgroup.

    Under a systemd slice it has the ``SLICE:PREFIX:NAME`` form runc and crun
    take with ``--systemd-cgroup`` (their scope is ``crio-ID.scope``); under a
    cgroupfs parent it is a path.
    """
    if cgroup_parent.endswith(".slice") and "/" not in cgroup_parent:
        return f"{cgroup_parent}:crio:{container_id}"
    return f"{cgroup_parent.rstrip('/')}/crio-{container_id}"


def _namespaces(
    request: ContainerRequest, pod: PodContext, target_pid: int, cgroup_v2: bool
) -> list[dict[str, str]]:
    pod_ns = pod.namespaces
    out: list[dict[str, str]] = [{"type": "mount"}]
    if pod.network_mode is not NamespaceMode.NODE:
        out.append({"type": "network", **({"path": pod_ns.network} if pod_ns.network else {})})
        out.append({"type": "uts", **({"path": pod_ns.uts} if pod_ns.uts else {})})
    if pod.ipc_mode is not NamespaceMode.NODE:
        out.append({"type": "ipc", **({"path": pod_ns.ipc} if pod_ns.ipc else {})})
    pid_mode = request.security.pid
    field_name = "linux.security_context.namespace_options.pid"
    if pid_mode is NamespaceMode.POD and not pod_ns.pid:
        # POD means "the pod's": a pod that shares none gives each container its own
        # (or the host's, for a hostPID pod).
        pid_mode = (
            NamespaceMode.NODE if pod.pid_mode is NamespaceMode.NODE else NamespaceMode.CONTAINER
        )
    if pid_mode is NamespaceMode.CONTAINER:
        out.append({"type": "pid"})
    elif pid_mode is NamespaceMode.POD:
        out.append({"type": "pid", "path": pod_ns.pid})
    elif pid_mode is NamespaceMode.TARGET:
        if target_pid <= 0:
            raise InvalidRequestError(
                f"{field_name}: TARGET needs a running target container (target_id)"
            )
        out.append({"type": "pid", "path": f"/proc/{target_pid}/ns/pid"})
    if cgroup_v2:
        out.append({"type": "cgroup"})
    return out


def _seccomp(
    request: ContainerRequest, caps: list[str], defaults: SpecDefaults
) -> dict[str, Any] | None:
    profile = request.security.seccomp
    field_name = "linux.security_context.seccomp"
    if profile is None and not defaults.seccomp_default_when_empty:
        return None  # the CRI text: no profile named means unconfined
    if profile is None or profile.profile_type is ProfileType.RUNTIME_DEFAULT:
        if defaults.seccomp_profile:
            return _load_profile(defaults.seccomp_profile, "crio.runtime.seccomp_profile")
        return runtime_default_profile(caps)
    if profile.profile_type is ProfileType.UNCONFINED:
        return None
    ref = profile.localhost_ref
    if not ref.startswith("/"):
        raise InvalidRequestError(
            f"{field_name}.localhost_ref: {ref!r} is not an absolute path to a profile"
        )
    return _load_profile(ref, f"{field_name}.localhost_ref")


def _load_profile(path: str, field_name: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            profile = json.loads(handle.read(16 << 20))
    except OSError as exc:
        raise InvalidRequestError(f"{field_name}: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidRequestError(f"{field_name}: {path} is not JSON: {exc}") from None
    if not isinstance(profile, dict) or "defaultAction" not in profile:
        raise InvalidRequestError(f"{field_name}: {path} is not a seccomp profile")
    return profile


def _process(
    request: ContainerRequest,
    image: ImageConfig,
    pod: PodContext,
    defaults: SpecDefaults,
    user: ProcessUser,
    caps: list[str],
) -> dict[str, Any]:
    cwd = request.working_dir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise InvalidRequestError(f"working_dir: {cwd!r} is not an absolute path")
    ambient = resolve_capabilities(
        (),
        request.security.capabilities.add_ambient_capabilities,
        (),
        "linux.security_context.capabilities.ambient",
        defaults.available_capabilities,
    )
    process: dict[str, Any] = {
        "terminal": request.tty,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": container_args(request, image),
        "env": container_env(request, image, defaults, pod.hostname, user.home),
        "cwd": cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            "inheritable": [],
            "ambient": [c for c in ambient if c in caps],
        },
        "rlimits": parse_rlimits(defaults.ulimits),
        "noNewPrivileges": request.security.no_new_privs,
        "oomScoreAdj": oom_score_adj(request.resources, defaults.min_oom_score_adj),
    }
    if user.additional_gids:
        process["user"]["additionalGids"] = list(user.additional_gids)
    return process


def build_spec(
    *,
    container_id: str,
    request: ContainerRequest,
    image: ImageConfig,
    pod: PodContext,
    defaults: SpecDefaults,
    rootfs: Path,
    target_pid: int = 0,
    mountinfo: list[MountPoint] | None = None,
) -> dict[str, Any]:
    """The OCI runtime spec for one container.

    :param rootfs: the mounted root filesystem (read for /etc/passwd, /etc/group;
        the working directory is created in it).
    :param target_pid: the host PID of the target container for pid TARGET mode.
    :raises InvalidRequestError: naming the field of whatever the request got wrong.
    """
    sec = request.security
    if sec.privileged and not pod.privileged:
        raise InvalidRequestError(
            "linux.security_context.privileged: the container is privileged but pod "
            f"{pod.pod_sandbox_id} is not (its security_context.privileged is false)"
        )
    user = resolve_user(rootfs, image.user, sec)
    if sec.privileged:
        caps = [c for c in ALL_CAPABILITIES if c in defaults.available_capabilities]
    else:
        caps = resolve_capabilities(
            defaults.capabilities,
            sec.capabilities.add_capabilities,
            sec.capabilities.drop_capabilities,
            "linux.security_context.capabilities",
            defaults.available_capabilities,
        )
    user_mounts, propagation = bind_mounts(request.mounts, mountinfo)
    devices, device_rules = device_entries(request.devices)
    resources = oci_resources(
        request.resources,
        field_prefix="linux.resources",
        pids_limit=defaults.pids_limit,
        cgroup_v2=defaults.cgroup_v2,
        swap_accounting=defaults.swap_accounting,
        hugepage_sizes=defaults.hugepage_sizes,
    )
    mounts = default_mounts(
        privileged=sec.privileged,
        shm_path=pod.shm_path,
        files_dir=pod.files_dir,
        readonly_rootfs=sec.readonly_rootfs,
    )
    linux: dict[str, Any] = {
        "namespaces": _namespaces(request, pod, target_pid, defaults.cgroup_v2),
        "cgroupsPath": cgroups_path(pod.cgroup_parent, container_id),
    }
    if sec.privileged:
        resources["devices"] = [{"allow": True, "access": "rwm"}]
        if not defaults.privileged_without_host_devices:
            devices = host_devices() + devices
    else:
        resources["devices"] = [dict(rule) for rule in DEFAULT_DEVICE_RULES] + device_rules
        masked = sec.masked_paths if sec.masked_paths is not None else DEFAULT_MASKED_PATHS
        readonly = sec.readonly_paths if sec.readonly_paths is not None else DEFAULT_READONLY_PATHS
        linux["maskedPaths"] = list(masked)
        linux["readonlyPaths"] = list(readonly)
        seccomp = _seccomp(request, caps, defaults)
        if seccomp is not None:
            linux["seccomp"] = seccomp
    linux["resources"] = resources
    if devices:
        linux["devices"] = devices
    if propagation:
        linux["rootfsPropagation"] = propagation
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process(request, image, pod, defaults, user, caps),
        "root": {"path": str(rootfs), "readonly": sec.readonly_rootfs},
        "mounts": sort_mounts(mounts + user_mounts),
        "annotations": {
            **request.annotations,
            "io.kubernetes.cri-o.ContainerType": "container",
            "io.kubernetes.cri-o.ContainerID": container_id,
            "io.kubernetes.cri-o.SandboxID": pod.pod_sandbox_id,
            "io.kubernetes.cri-o.Name": request.name,
            "io.kubernetes.pod.name": pod.name,
            "io.kubernetes.pod.namespace": pod.namespace,
        },
        "linux": linux,
    }
    if any(ns["type"] == "uts" for ns in linux["namespaces"]) and pod.hostname:
        spec["hostname"] = pod.hostname
    _make_cwd(rootfs, spec["process"]["cwd"], user)
    return spec


def _make_cwd(rootfs: Path, cwd: str, user: ProcessUser) -> None:
    """Create the working directory in the rootfs (owned by the user) if it is missing."""
    target = secure_join(rootfs, cwd)
    if target.exists():
        return
    try:
        target.mkdir(parents=True, mode=0o755)
        os.chown(target, user.uid, user.gid)
    except OSError as exc:
        raise InvalidRequestError(
            f"working_dir: cannot create {cwd} in the container's rootfs: {exc.strerror}"
        ) from None
