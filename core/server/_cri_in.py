"""CRI request messages into crio's dataclasses, checked field by field.

Proto messages stop here: everything below the server layer sees the frozen
dataclasses of :mod:`crio.oci.container` and :mod:`crio.state`.
"""

from __future__ import annotations

from collections.abc import Sequence

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError
from crio.network import PortMapping
from crio.oci.container import (
    Capabilities,
    ContainerRequest,
    Device,
    HugepageLimit,
    Mount,
    ProfileType,
    Propagation,
    Resources,
    SecurityContext,
    SecurityProfile,
)
from crio.oci.resources import validate_resources
from crio.oci.runtime import NamespaceMode
from crio.state.records import DnsConfig

__all__ = [
    "argv",
    "container_request",
    "dns_config",
    "namespace_mode",
    "port_mappings",
    "require",
    "resources",
    "seccomp_profile",
]

_PROTOCOLS = {api.TCP: "tcp", api.UDP: "udp", api.SCTP: "sctp"}
_DEPRECATED_SECCOMP = {
    "runtime/default": ProfileType.RUNTIME_DEFAULT,
    "docker/default": ProfileType.RUNTIME_DEFAULT,
    "unconfined": ProfileType.UNCONFINED,
}


def require(value: str, field_name: str, rpc: str) -> str:
    """:raises InvalidRequestError: when a required string field is empty."""
    if not value:
        raise InvalidRequestError(f"{rpc}: {field_name} is empty")
    if "\0" in value:
        raise InvalidRequestError(f"{rpc}: {field_name} contains a NUL byte")
    return value


def namespace_mode(value: int, field_name: str) -> NamespaceMode:
    try:
        return NamespaceMode(value)
    except ValueError:
        raise InvalidRequestError(f"{field_name}: {value} is not a NamespaceMode") from None


def resources(msg: api.LinuxContainerResources, field_prefix: str) -> Resources:
    """:raises InvalidRequestError: naming a negative or malformed field."""
    res = Resources(
        cpu_period=msg.cpu_period,
        cpu_quota=msg.cpu_quota,
        cpu_shares=msg.cpu_shares,
        memory_limit_in_bytes=msg.memory_limit_in_bytes,
        oom_score_adj=msg.oom_score_adj,
        cpuset_cpus=msg.cpuset_cpus,
        cpuset_mems=msg.cpuset_mems,
        hugepage_limits=tuple(HugepageLimit(h.page_size, h.limit) for h in msg.hugepage_limits),
        unified=dict(msg.unified),
        memory_swap_limit_in_bytes=msg.memory_swap_limit_in_bytes,
    )
    validate_resources(res, field_prefix)
    return res


def seccomp_profile(
    profile: api.SecurityProfile | None, deprecated_path: str, field_name: str
) -> SecurityProfile | None:
    """The requested seccomp profile; None when the request names none."""
    if profile is not None:
        try:
            kind = ProfileType(profile.profile_type)
        except ValueError:
            raise InvalidRequestError(
                f"{field_name}.profile_type: {profile.profile_type} is not a profile type"
            ) from None
        if kind is ProfileType.LOCALHOST and not profile.localhost_ref:
            raise InvalidRequestError(f"{field_name}.localhost_ref: empty for a Localhost profile")
        return SecurityProfile(kind, profile.localhost_ref)
    if not deprecated_path:
        return None
    if deprecated_path in _DEPRECATED_SECCOMP:
        return SecurityProfile(_DEPRECATED_SECCOMP[deprecated_path])
    if deprecated_path.startswith("localhost/"):
        return SecurityProfile(ProfileType.LOCALHOST, deprecated_path.removeprefix("localhost"))
    raise InvalidRequestError(
        f"{field_name}_profile_path: {deprecated_path!r} is not runtime/default, "
        "unconfined or localhost/PATH"
    )


def _security(msg: api.LinuxContainerSecurityContext) -> SecurityContext:
    prefix = "linux.security_context"
    caps = msg.capabilities
    ns = msg.namespace_options
    pid = namespace_mode(ns.pid, f"{prefix}.namespace_options.pid")
    if pid is NamespaceMode.TARGET and not ns.target_id:
        raise InvalidRequestError(f"{prefix}.namespace_options.target_id: empty for pid TARGET")
    for kind in ("network", "ipc"):
        if namespace_mode(getattr(ns, kind), kind) is NamespaceMode.TARGET:
            raise InvalidRequestError(
                f"{prefix}.namespace_options.{kind}: TARGET is only valid for pid"
            )
    userns = ns.userns_options
    if (userns.uids or userns.gids) and userns.mode != api.NODE:
        raise InvalidRequestError(
            f"{prefix}.namespace_options.userns_options: user namespaces are not supported"
        )
    if msg.run_as_user.value < 0 or msg.run_as_group.value < 0:
        raise InvalidRequestError(f"{prefix}.run_as_user/run_as_group: must not be negative")
    if msg.HasField("run_as_user") and msg.run_as_username:
        raise InvalidRequestError(
            f"{prefix}.run_as_username: cannot be given together with run_as_user"
        )
    return SecurityContext(
        capabilities=Capabilities(
            tuple(caps.add_capabilities),
            tuple(caps.drop_capabilities),
            tuple(caps.add_ambient_capabilities),
        ),
        privileged=msg.privileged,
        network=namespace_mode(ns.network, f"{prefix}.namespace_options.network"),
        pid=pid,
        ipc=namespace_mode(ns.ipc, f"{prefix}.namespace_options.ipc"),
        target_id=ns.target_id,
        run_as_user=msg.run_as_user.value if msg.HasField("run_as_user") else None,
        run_as_group=msg.run_as_group.value if msg.HasField("run_as_group") else None,
        run_as_username=msg.run_as_username,
        readonly_rootfs=msg.readonly_rootfs,
        supplemental_groups=tuple(msg.supplemental_groups),
        no_new_privs=msg.no_new_privs,
        masked_paths=tuple(msg.masked_paths) or None,
        readonly_paths=tuple(msg.readonly_paths) or None,
        seccomp=seccomp_profile(
            msg.seccomp if msg.HasField("seccomp") else None,
            msg.seccomp_profile_path,
            f"{prefix}.seccomp",
        ),
    )


#: What execve(2) takes: a path of at most PATH_MAX bytes, each argument at most
#: MAX_ARG_STRLEN (32 pages), and no NUL inside one (it would end the string).
PATH_MAX = 4096
MAX_ARG_STRLEN = 32 * 4096
MAX_ARGS_TOTAL = 1024 * 1024


#: The longest name of one directory entry (every Linux file system crio runs on).
NAME_MAX = 255


def file_path(value: str, field_name: str, rpc: str) -> None:
    """Refuse a path no file system takes (PATH_MAX bytes in all, NAME_MAX per
    component, no NUL), naming the field; it would otherwise fail deep inside the
    runtime or its monitor (conmon's argv: E2BIG) as an internal error."""
    encoded = value.encode("utf-8", "surrogateescape")
    if "\0" in value:
        raise InvalidRequestError(f"{rpc}: {field_name} contains a NUL byte")
    if len(encoded) >= PATH_MAX:
        raise InvalidRequestError(
            f"{rpc}: {field_name} is {len(encoded)} bytes long; a path has fewer than {PATH_MAX}"
        )
    for component in encoded.split(b"/"):
        if len(component) > NAME_MAX:
            raise InvalidRequestError(
                f"{rpc}: {field_name} has a component of {len(component)} bytes; a file "
                f"name has at most {NAME_MAX}"
            )


def argv(values: Sequence[str], field_name: str, rpc: str, executable: bool = True) -> None:
    """Refuse a command no exec could run, naming the field; such input would otherwise
    reach the runtime, whose error echoes it back (runc's over 64 KiB of it deadlocks
    against conmon 2.1.6, which waits for runc before reading its stderr pipe).

    :param executable: ``values[0]`` is the program (checked against PATH_MAX).
    :raises InvalidRequestError:
    """
    total = 0
    for i, value in enumerate(values):
        size = len(value.encode("utf-8", "surrogateescape"))
        total += size + 1
        if "\0" in value:
            raise InvalidRequestError(f"{rpc}: {field_name}[{i}] contains a NUL byte")
        if i == 0 and executable and size > PATH_MAX:
            raise InvalidRequestError(
                f"{rpc}: {field_name}[0] is {size} bytes long; a program path has at most "
                f"{PATH_MAX}"
            )
        if size > MAX_ARG_STRLEN:
            raise InvalidRequestError(
                f"{rpc}: {field_name}[{i}] is {size} bytes long; an argument has at most "
                f"{MAX_ARG_STRLEN}"
            )
    if total > MAX_ARGS_TOTAL:
        raise InvalidRequestError(
            f"{rpc}: {field_name} is {total} bytes in all; at most {MAX_ARGS_TOTAL} are passed"
        )


def container_request(config: api.ContainerConfig) -> ContainerRequest:
    """:raises InvalidRequestError: naming the field that is missing or malformed."""
    rpc = "CreateContainer"
    if not config.HasField("metadata"):
        raise InvalidRequestError(f"{rpc}: config.metadata is missing")
    name = require(config.metadata.name, "config.metadata.name", rpc)
    if "/" in name or name in (".", ".."):
        raise InvalidRequestError(f"{rpc}: config.metadata.name {name!r} is not a valid name")
    image = require(config.image.image, "config.image.image", rpc)
    if config.log_path and (config.log_path.startswith("/") or ".." in config.log_path.split("/")):
        raise InvalidRequestError(
            f"{rpc}: config.log_path {config.log_path!r} must be relative to the pod's "
            "log_directory and stay inside it"
        )
    file_path(config.log_path, "config.log_path", rpc)
    argv(config.command, "config.command", rpc)
    argv(config.args, "config.args", rpc, executable=not config.command)
    argv([f"{kv.key}={kv.value}" for kv in config.envs], "config.envs", rpc, executable=False)
    for i, kv in enumerate(config.envs):
        if not kv.key:
            raise InvalidRequestError(f"{rpc}: config.envs[{i}].key is empty")
    mounts = []
    for i, m in enumerate(config.mounts):
        try:
            propagation = Propagation(m.propagation)
        except ValueError:
            raise InvalidRequestError(
                f"{rpc}: config.mounts[{i}].propagation: {m.propagation} is unknown"
            ) from None
        if m.uidMappings or m.gidMappings:
            raise InvalidRequestError(
                f"{rpc}: config.mounts[{i}]: ID-mapped mounts are not supported"
            )
        mounts.append(
            Mount(m.container_path, m.host_path, m.readonly, m.selinux_relabel, propagation)
        )
    if config.CDI_devices:
        raise InvalidRequestError(f"{rpc}: config.CDI_devices: CDI devices are not supported")
    linux = config.linux
    return ContainerRequest(
        name=name,
        attempt=config.metadata.attempt,
        image=image,
        command=tuple(config.command),
        args=tuple(config.args),
        working_dir=config.working_dir,
        envs=tuple((kv.key, kv.value) for kv in config.envs),
        mounts=tuple(mounts),
        devices=tuple(
            Device(d.container_path, d.host_path, d.permissions or "rwm") for d in config.devices
        ),
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        log_path=config.log_path,
        stdin=config.stdin,
        stdin_once=config.stdin_once,
        tty=config.tty,
        resources=resources(linux.resources, "config.linux.resources"),
        security=_security(linux.security_context),
    )


def dns_config(msg: api.DNSConfig) -> DnsConfig:
    return DnsConfig(tuple(msg.servers), tuple(msg.searches), tuple(msg.options))


def port_mappings(msgs: list[api.PortMapping]) -> tuple[PortMapping, ...]:
    """The pod's hostPort mappings (those without a host port are not passed on)."""
    out = []
    for i, pm in enumerate(msgs):
        field_name = f"config.port_mappings[{i}]"
        if pm.protocol not in _PROTOCOLS:
            raise InvalidRequestError(f"{field_name}.protocol: {pm.protocol} is unknown")
        if not 0 < pm.container_port < 65536:
            raise InvalidRequestError(
                f"{field_name}.container_port: {pm.container_port} is not a port"
            )
        if not 0 <= pm.host_port < 65536:
            raise InvalidRequestError(f"{field_name}.host_port: {pm.host_port} is not a port")
        if pm.host_port:
            out.append(
                PortMapping(pm.container_port, pm.host_port, _PROTOCOLS[pm.protocol], pm.host_ip)
            )
    return tuple(out)
