"""crio.toml: the daemon's configuration as typed tables (:mod:`crio._model`).

The file is TOML with every table under ``[crio]`` (as in CRI-O's crio.conf).
It is read from ``/etc/crio/crio.conf`` and then the drop-ins in
``/etc/crio/crio.conf.d/*.conf`` in lexical order, each drop-in overriding the
keys it names; command-line flags override the result.

Every table forbids unknown keys, so a typo stops crio with one line naming
the file, ``table.key``, what was given and what is expected (see
:func:`load`). Handler tables (``[crio.runtime.runtimes.NAME]``) are the one
exception: keys beyond the core ones belong to the plugin that claims the
handler's ``runtime_type``, which validates them when it builds the runtime.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from crio._model import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from crio.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "DEFAULT_CONFIG_FILE",
    "ApiConfig",
    "Config",
    "CrioConfig",
    "ImageConfig",
    "MetricsConfig",
    "NetworkConfig",
    "RuntimeConfig",
    "RuntimeHandler",
    "configured_paths",
    "load",
    "parse_duration",
]

DEFAULT_CONFIG_FILE = "/etc/crio/crio.conf"
DEFAULT_CONFIG_DIR = "/etc/crio/crio.conf.d"

_HANDLER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Parse a Go-style duration ("4h", "1m30s", "250ms", "0") into seconds."""
    text = text.strip()
    if text in ("", "0"):
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"not a duration like '4h', '1m30s' or '250ms': {text!r}")
    return total


def _absolute(value: str) -> str:
    if value and not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got relative path {value!r}")
    return value


def _duration(value: str) -> str:
    parse_duration(value)
    return value


# An absolute path; "" means "use the built-in default" where a field says so.
AbsPath = Annotated[str, AfterValidator(_absolute)]
Duration = Annotated[str, AfterValidator(_duration)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RuntimeHandler(BaseModel):
    """One ``[crio.runtime.runtimes.NAME]`` table: an OCI runtime handler.

    NAME is what a Kubernetes RuntimeClass sends as ``runtime_handler``.
    Keys not listed here are kept in ``options`` for the plugin that claims
    ``runtime_type``; that plugin rejects the ones it does not know.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    runtime_path: AbsPath = Field(
        "", description="Path to the runtime executable; empty looks NAME up in $PATH."
    )
    runtime_type: str = Field(
        "oci",
        description='"oci" for runc-compatible CLIs under conmon, "vm" for one VM per pod, '
        "or a type a vendor plugin provides.",
    )
    runtime_root: AbsPath = Field(
        "", description="The runtime's state directory (--root); empty: /run/crio/runtimes/NAME."
    )
    runtime_config_path: AbsPath = Field(
        "", description="Configuration file handed to the runtime, if it takes one."
    )
    monitor_path: AbsPath = Field(
        "", description="The monitor for this handler; empty uses [crio.runtime] conmon."
    )
    monitor_env: list[str] = Field(
        default_factory=list, description="Extra KEY=VALUE environment for the monitor."
    )
    allowed_annotations: list[str] = Field(
        default_factory=list,
        description="Pod annotations this handler honours: io.kubernetes.cri-o.ShmSize (the "
        "pod's /dev/shm size), io.kubernetes.cri-o.Devices (host devices for its containers); "
        "pods on other handlers are run as if they were absent.",
    )
    privileged_without_host_devices: bool = Field(
        False, description="Privileged containers on this handler do not see host devices."
    )

    @field_validator("allowed_annotations")
    @classmethod
    def _known_annotations(cls, value: list[str]) -> list[str]:
        if not value:
            return value
        from crio.oci.pod_annotations import KNOWN

        for name in value:
            if name not in KNOWN:
                raise ValueError(
                    f"crio does not implement annotation {name!r}; it can allow: "
                    + ", ".join(sorted(KNOWN))
                )
        return value

    @field_validator("runtime_type")
    @classmethod
    def _type_is_a_word(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_.-]*", value):
            raise ValueError(f"must be a lowercase word such as 'oci' or 'vm', got {value!r}")
        return value

    @property
    def options(self) -> dict[str, Any]:
        """The keys beyond the core ones, for the plugin that claims this handler."""
        return dict(self.model_extra or {})


def _default_handlers() -> dict[str, RuntimeHandler]:
    return {
        "runc": RuntimeHandler(runtime_path="/usr/bin/runc", runtime_root="/run/runc"),
        "crun": RuntimeHandler(runtime_path="/usr/bin/crun", runtime_root="/run/crun"),
    }


#: The groups of series ``metrics_collectors`` may list (see crio.metrics.COLLECTORS).
_METRICS_COLLECTORS = (
    "operations",
    "image_pulls",
    "containers",
    "containers_oom",
    "startup",
    "network",
    "storage",
)

_DEFAULT_CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "KILL",
]


class RuntimeConfig(_Table):
    """``[crio.runtime]``: how pods and containers are run."""

    default_runtime: str = Field(
        "runc", description="Handler used when a pod names none; must be a key of runtimes."
    )
    runtime_untrusted_workload: str = Field(
        "",
        description="Handler for pods annotated io.kubernetes.cri-o.TrustedSandbox=false "
        "(the 2017 trust mechanism); empty: such pods use default_runtime.",
    )
    default_workload_trust: Literal["trusted", "untrusted"] = Field(
        "trusted", description="Trust of pods without the TrustedSandbox annotation."
    )
    cgroup_manager: Literal["cgroupfs", "systemd"] = Field(
        "cgroupfs", description="Who creates the cgroups; cgroupfs where systemd is not PID 1."
    )
    conmon: AbsPath = Field("/usr/bin/conmon", description="Path to the conmon monitor.")
    conmon_env: list[str] = Field(
        default_factory=lambda: [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ],
        description="Environment for conmon.",
    )
    seccomp_profile: AbsPath = Field(
        "", description="Seccomp profile (JSON) for RuntimeDefault; empty: crio's built-in one."
    )
    seccomp_use_default_when_empty: bool = Field(
        True,
        description="A container whose request names no seccomp profile gets RuntimeDefault "
        "(as CRI-O since 2022); false: it runs unconfined, as the CRI text says.",
    )
    default_capabilities: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_CAPABILITIES),
        description="Capabilities a container gets unless its security context changes them.",
    )
    default_sysctls: list[str] = Field(
        default_factory=list, description="KEY=VALUE sysctls applied to every pod."
    )
    default_ulimits: list[str] = Field(
        default_factory=lambda: ["nofile=20000:20000"],
        description="NAME=SOFT:HARD rlimits for every container (must stay under crio's own).",
    )
    pids_limit: int = Field(
        0, ge=-1, description="Default pids.max per container; 0 or -1: no limit."
    )
    log_size_max: int = Field(
        -1, ge=-1, description="Bytes after which conmon truncates a container log; -1: no limit."
    )
    log_to_journald: bool = Field(
        False,
        description="conmon also sends container output to journald (fields CONTAINER_ID_FULL, "
        "CONTAINER_NAME); the CRI log file is written either way.",
    )
    ctr_stop_timeout: int = Field(
        30,
        ge=1,
        description="Seconds a StopContainer waits for the container's exit once it has sent "
        "SIGKILL, before it fails (CRI-O's meaning; the grace period before SIGKILL is the "
        "request's timeout). CRI-O raises values under 30 to 30; crio takes them as given.",
    )
    container_exits_dir: AbsPath = Field(
        "/run/crio/exits", description="Where conmon writes each container's exit code."
    )
    container_attach_socket_dir: AbsPath = Field(
        "/run/crio", description="Where conmon makes each container's attach socket."
    )
    namespaces_dir: AbsPath = Field(
        "/run/crio/ns", description="Where a pod's namespaces are pinned by bind mounts."
    )
    drop_infra_ctr: bool = Field(
        True, description="Pin namespaces instead of running an infra (pause) process."
    )
    no_pivot: bool = Field(
        False,
        description="Ask the runtime not to pivot_root (ramdisks); 'oci' handlers pass it to "
        "runc and crun, a 'vm' handler refuses it.",
    )
    hooks_dir: list[AbsPath] = Field(
        default_factory=lambda: [
            "/usr/share/containers/oci/hooks.d",
            "/etc/containers/oci/hooks.d",
        ],
        description="Directories of OCI hook files (oci-hooks(5), version 1.0.0); a file in a "
        "later directory masks one of the same name in an earlier one; read again when "
        "they change. A directory that does not exist holds no hooks.",
    )
    default_env: list[str] = Field(
        default_factory=list, description="KEY=VALUE environment added to every container."
    )
    runtimes: dict[str, RuntimeHandler] = Field(
        default_factory=_default_handlers,
        description="One table per handler, [crio.runtime.runtimes.NAME].",
    )

    @field_validator("runtimes")
    @classmethod
    def _handler_names(cls, value: dict[str, RuntimeHandler]) -> dict[str, RuntimeHandler]:
        for name in value:
            if not _HANDLER_NAME.fullmatch(name):
                raise ValueError(
                    f"handler name {name!r} must be lowercase letters, digits, '-', '_' or '.'"
                )
        return value

    @field_validator("default_sysctls", "default_env")
    @classmethod
    def _key_value(cls, value: list[str]) -> list[str]:
        for item in value:
            if "=" not in item or item.startswith("="):
                raise ValueError(f"entry {item!r} is not KEY=VALUE")
        return value

    @model_validator(mode="after")
    def _handlers_exist(self) -> RuntimeConfig:
        if self.default_runtime not in self.runtimes:
            raise ValueError(
                f"default_runtime: {self.default_runtime!r} is not a configured handler "
                f"(have: {', '.join(sorted(self.runtimes)) or 'none'})"
            )
        untrusted = self.runtime_untrusted_workload
        if untrusted and untrusted not in self.runtimes:
            raise ValueError(
                f"runtime_untrusted_workload: {untrusted!r} is not a configured handler "
                f"(have: {', '.join(sorted(self.runtimes))})"
            )
        return self


class ApiConfig(_Table):
    """``[crio.api]``: the CRI socket and the streaming server."""

    listen: AbsPath = Field("/var/run/crio/crio.sock", description="The CRI gRPC unix socket.")
    stream_address: str = Field(
        "127.0.0.1", description="Address the streaming (exec/attach/port-forward) server binds."
    )
    stream_port: int = Field(0, ge=0, le=65535, description="Its port; 0 picks a free one.")
    stream_enable_tls: bool = Field(False, description="Serve the streaming server over TLS.")
    stream_tls_cert: AbsPath = Field("", description="TLS certificate (PEM) for streaming.")
    stream_tls_key: AbsPath = Field("", description="TLS private key (PEM) for streaming.")
    stream_tls_ca: AbsPath = Field(
        "", description="CA bundle (PEM); when set, streaming clients must present a certificate."
    )
    stream_idle_timeout: Duration = Field(
        "4h", description="An idle streaming connection is closed after this long."
    )
    grpc_max_send_msg_size: int = Field(
        80 * 1024 * 1024, gt=0, description="Largest gRPC message crio sends, in bytes."
    )
    grpc_max_recv_msg_size: int = Field(
        80 * 1024 * 1024, gt=0, description="Largest gRPC message crio accepts, in bytes."
    )
    inspect_listen: AbsPath = Field(
        "",
        description="Unix socket of the inspection API (/info, /config, /containers/ID; "
        "crio status); empty: crio-inspect.sock beside listen.",
    )

    @model_validator(mode="after")
    def _tls_files(self) -> ApiConfig:
        if self.stream_enable_tls and not (self.stream_tls_cert and self.stream_tls_key):
            raise ValueError("stream_enable_tls: needs stream_tls_cert and stream_tls_key")
        return self


class ImageConfig(_Table):
    """``[crio.image]``: pulling, trust and the pause image."""

    default_transport: str = Field(
        "docker://", description="Transport for image names that do not name one."
    )
    pause_image: str = Field(
        "registry.k8s.io/pause:3.9",
        description="Image of the infra container, used only when drop_infra_ctr is false.",
    )
    pause_command: str = Field("/pause", description="Command of the infra container.")
    pause_image_auth_file: AbsPath = Field(
        "",
        description="auth.json (or a kubelet config.json) with the credentials for pulling "
        "pause_image; when set it is used for that pull instead of global_auth_file.",
    )
    global_auth_file: AbsPath = Field(
        "", description="auth.json with registry credentials used for every pull."
    )
    signature_policy: AbsPath = Field(
        "", description="policy.json for every pull; empty: /etc/containers/policy.json."
    )
    registries_conf: AbsPath = Field(
        "", description="registries.conf (v2); empty: /etc/containers/registries.conf."
    )
    registries_d: AbsPath = Field(
        "",
        description="Signature lookaside configs; empty: /etc/containers/registries.d.",
    )
    insecure_registries: list[str] = Field(
        default_factory=list, description="Registries reached over plain HTTP or unverified TLS."
    )
    registries: list[str] = Field(
        default_factory=list,
        description="Search list for short names, tried before registries.conf's own.",
    )
    max_parallel_downloads: int = Field(
        6, ge=1, le=64, description="Blobs of one pull fetched at once."
    )
    big_files_temporary_dir: AbsPath = Field(
        "", description="Where blobs are staged while they download; empty: under root."
    )


class NetworkConfig(_Table):
    """``[crio.network]``: CNI."""

    network_dir: AbsPath = Field("/etc/cni/net.d/", description="Directory of CNI configs.")
    plugin_dirs: list[AbsPath] = Field(
        default_factory=lambda: ["/opt/cni/bin/", "/usr/lib/cni/"],
        description="Directories searched for CNI plugin executables.",
    )
    cni_default_network: str = Field(
        "", description="Network to use by name; empty: the first config by file name."
    )


class MetricsConfig(_Table):
    """``[crio.metrics]``: Prometheus metrics, served at ``/metrics``."""

    enable_metrics: bool = Field(
        False,
        description="Serve Prometheus metrics (on metrics_host:metrics_port and/or "
        "metrics_socket).",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the metrics server binds (with metrics_port)."
    )
    metrics_port: int = Field(
        9090, ge=0, le=65535, description="TCP port of the metrics server; 0: no TCP listener."
    )
    metrics_socket: AbsPath = Field(
        "", description="Unix socket the metrics are also served on; empty: none."
    )
    metrics_collectors: list[str] = Field(
        default_factory=lambda: list(_METRICS_COLLECTORS),
        description="Groups of series to collect: " + ", ".join(_METRICS_COLLECTORS) + ".",
    )

    @field_validator("metrics_collectors")
    @classmethod
    def _known_collectors(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(_METRICS_COLLECTORS))
        if unknown:
            raise ValueError(
                f"unknown collector(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(_METRICS_COLLECTORS)}"
            )
        return value

    @model_validator(mode="after")
    def _somewhere_to_serve(self) -> MetricsConfig:
        if self.enable_metrics and not self.metrics_port and not self.metrics_socket:
            raise ValueError(
                "enable_metrics: metrics_port is 0 and metrics_socket is empty; "
                "set at least one of them"
            )
        return self


class CrioConfig(_Table):
    """``[crio]``: storage locations and every sub-table."""

    root: AbsPath = Field(
        "/var/lib/containers/storage", description="Image, layer and container storage."
    )
    runroot: AbsPath = Field(
        "/run/containers/storage", description="Run-time state of the store (mounts, locks)."
    )
    storage_driver: str = Field(
        "", description="Graph driver; empty: overlay where the kernel has it, else vfs."
    )
    storage_option: list[str] = Field(
        default_factory=list, description="Driver options, e.g. 'overlay.mountopt=nodev'."
    )
    additionalimagestores: list[AbsPath] = Field(
        default_factory=list,
        description=(
            "Read-only image stores (containers/storage roots, e.g. on NFS) whose images "
            "are used in place; as containers/storage's storage.conf names it."
        ),
    )
    log_dir: AbsPath = Field(
        "/var/log/crio/pods", description="Default directory for container logs."
    )
    state_dir: AbsPath = Field(
        "/var/lib/crio", description="crio's own records of pods and containers."
    )
    version_file: AbsPath = Field(
        "/run/crio/version", description="Written at start; tells a reboot from a restart."
    )
    api: ApiConfig = Field(default_factory=ApiConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


class Config(_Table):
    """The whole file: one ``[crio]`` table."""

    crio: CrioConfig = Field(default_factory=CrioConfig)
    _origins: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)

    def origin(self, key: str) -> str | None:
        """The file (or "command line") that set ``key`` or its closest table."""
        parts = tuple(key.split("."))
        for n in range(len(parts), 0, -1):
            if parts[:n] in self._origins:
                return self._origins[parts[:n]]
        return None


def configured_paths(config: Config) -> frozenset[str]:
    """Every absolute path the configuration names, normalised (and resolved, so that
    ``/var/run/...`` and ``/run/...`` are one): clean-ups never take one for garbage."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str) and value.startswith("/"):
            found.add(os.path.normpath(value))
            found.add(os.path.realpath(value))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(config.model_dump())
    return frozenset(found)


# ---------------------------------------------------------------------------
# Loading


def _merge(
    base: dict[str, Any],
    overlay: Mapping[str, Any],
    origins: dict[tuple[str, ...], str],
    source: str,
    prefix: tuple[str, ...] = (),
) -> None:
    """Merge ``overlay`` into ``base`` table by table, noting where each key came from."""
    for key, value in overlay.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            origins.setdefault(path, source)
            _merge(base[key], value, origins, source, path)
        else:
            base[key] = _copy_tables(value)
            for sub in _leaf_paths(value, path):
                origins[sub] = source
            origins[path] = source


def _copy_tables(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy_tables(v) for k, v in value.items()}
    return value


def _leaf_paths(value: Any, path: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            yield from _leaf_paths(sub, (*path, key))
    yield path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file does not exist", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None
    import tomllib  # only when there is a file: a node on the defaults has none (~4 ms)

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from None


def _describe_error(exc: ValidationError, origins: dict[tuple[str, ...], str]) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc) if loc else "crio"
    file = next((origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins), None)
    if error["type"] == "extra_forbidden":
        given = error.get("input")
        kind = "table" if isinstance(given, Mapping) else "key"
        allowed = _allowed_keys(loc[:-1])
        return ConfigError(
            f"unknown {kind}; expected one of: {', '.join(allowed)}", file=file, key=key
        )
    message = error["msg"].removeprefix("Value error, ")
    # Model-level checks start their message with the field they are about.
    field_name, sep, rest = message.partition(": ")
    if sep and field_name in _allowed_keys(loc):
        loc, message = (*loc, field_name), rest
        key = ".".join(loc)
    if message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    if "input" in error and not isinstance(error["input"], Mapping) and "got " not in message:
        message = f"got {error['input']!r}, {message}"
    return ConfigError(message, file=file, key=key)


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return sorted(model.model_fields)


def _set_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def load(
    config_file: str | None = None,
    config_dir: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the main file, its drop-ins in lexical order, then command-line overrides.

    :param config_file: the main file; None means :data:`DEFAULT_CONFIG_FILE`,
        which may be absent (the defaults apply). A file named explicitly must exist.
    :param config_dir: drop-in directory; None means :data:`DEFAULT_CONFIG_DIR`.
        Only ``*.conf`` files are read.
    :param overrides: dotted keys (``"crio.api.listen"``) from the command line.
    :raises ConfigError: with the one-line message crio prints before exiting 1.
    """
    # Start from the defaults so that a drop-in adding one handler table keeps
    # the built-in ones, as CRI-O's decoder does.
    data: dict[str, Any] = Config().model_dump()
    origins: dict[tuple[str, ...], str] = {}
    main = Path(config_file or DEFAULT_CONFIG_FILE)
    if config_file is not None or main.exists():
        _merge(data, _read_toml(main), origins, str(main))
    drop_dir = Path(config_dir or DEFAULT_CONFIG_DIR)
    if config_dir is not None and not drop_dir.is_dir():
        raise ConfigError("config directory does not exist", file=str(drop_dir))
    if drop_dir.is_dir():
        for path in sorted(drop_dir.glob("*.conf")):
            _merge(data, _read_toml(path), origins, str(path))
    for dotted, value in (overrides or {}).items():
        _set_override(data, dotted, value)
        origins[tuple(dotted.split("."))] = "command line"
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _describe_error(exc, origins) from None
    config._origins = origins
    return config
