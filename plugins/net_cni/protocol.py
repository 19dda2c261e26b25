"""The CNI protocol as pure code: requests in, plugin output parsed, no I/O.

A CNI operation on a network list is a sequence of plugin invocations. An
:class:`Operation` hands out one :class:`Invocation` at a time (environment
and stdin for one plugin) and takes the plugin's exit status and output
back; the caller runs the executable. ADD chains each plugin's result into
the next one's ``prevResult``; DEL runs the list backwards with the cached
ADD result; CHECK runs it forwards with the cached result. Nothing here
touches a file, a process or a clock (compare h11's ``Connection``).

Spec versions understood: 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0 (the result
format is the same from 0.3.0 on, but 1.0.0 dropped ``ips[].version``).
CHECK needs 0.4.0; GC and STATUS need 1.1.0.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crio.errors import InvalidRequestError, PluginError

__all__ = [
    "CHECK_VERSIONS",
    "DNS",
    "GC_VERSIONS",
    "SUPPORTED_VERSIONS",
    "Attachment",
    "CNIPluginError",
    "CNIProtocolError",
    "IPConfig",
    "Interface",
    "Invocation",
    "Operation",
    "Result",
    "Route",
    "VersionInfo",
    "check_container_id",
    "command_env",
    "format_cni_args",
    "parse_failure",
    "parse_result",
    "parse_version_info",
    "plugin_skipped",
    "plugin_stdin",
    "render_result",
    "version_tuple",
]

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CHECK_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
GC_VERSIONS = ("1.1.0",)

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_IFNAME_BAD = re.compile(r"[/:\s]")


class CNIProtocolError(PluginError):
    """A plugin printed something that is not valid CNI (the message names plugin and field)."""


class CNIPluginError(PluginError):
    """A plugin reported a failure; ``msg`` and ``details`` are the plugin's own words.

    ``str()`` is ``"<plugin> <COMMAND> (network <name>): <msg>[; <details>]"`` with
    the message verbatim, so that the kubelet shows what the plugin said.
    """

    def __init__(
        self, plugin: str, command: str, network: str, code: int, msg: str, details: str = ""
    ) -> None:
        self.plugin = plugin
        self.command = command
        self.network = network
        self.code = code
        self.msg = msg
        self.details = details
        text = f"CNI plugin {plugin} {command} (network {network}) failed: {msg}"
        if details:
            text += f"; {details}"
        super().__init__(text)


def version_tuple(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` as ``(1, 0, 0)``; raises ValueError for anything else."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{version!r} is not a semantic version")
    return int(parts[0]), int(parts[1]), int(parts[2])


def check_container_id(container_id: str) -> None:
    """Refuse a container id the CNI spec does not allow (it also names cache files)."""
    if not _CONTAINER_ID.match(container_id):
        raise InvalidRequestError(
            f"pod_sandbox_id {container_id!r} is not a valid CNI container id "
            "(letters, digits, '_', '.', '-', starting with a letter or digit)"
        )


def format_cni_args(pairs: Iterable[tuple[str, str]]) -> str:
    """``CNI_ARGS``: ``IgnoreUnknown=1`` then ``KEY=VALUE`` pairs, ``;``-separated."""
    items = ["IgnoreUnknown=1"]
    for key, value in pairs:
        if not key or any(c in key for c in ";=") or any(c in value for c in ";="):
            raise InvalidRequestError(f"CNI_ARGS {key}: {value!r} may not contain ';' or '='")
        items.append(f"{key}={value}")
    return ";".join(items)


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class Interface:
    """One ``interfaces[]`` entry; ``sandbox`` is set for interfaces inside the pod."""

    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int = 0


@dataclass(frozen=True, slots=True)
class IPConfig:
    """One ``ips[]`` entry."""

    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    interface: int | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """One ``routes[]`` entry."""

    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    gw: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None


@dataclass(frozen=True, slots=True)
class DNS:
    """The ``dns`` object of a result."""

    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Result:
    """A parsed ADD result; ``raw`` is the plugin's JSON object, passed on verbatim."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = DNS()
    raw: Mapping[str, Any] = field(default_factory=dict)

    def _pod_addresses(self) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        found = []
        for ip in self.ips:
            idx = ip.interface
            if idx is not None and not self.interfaces[idx].sandbox:
                continue
            found.append(ip.address)
        found.sort(key=lambda a: a.version)
        return found

    def pod_ips(self) -> tuple[str, ...]:
        """Addresses on the pod's side (IPv4 first, then IPv6), without prefix length.

        An address counts when its ``interface`` is a sandbox interface, or
        when it names no interface (IPAM-only results).
        """
        return tuple(str(a.ip) for a in self._pod_addresses())

    def pod_addresses(self) -> tuple[str, ...]:
        """The same addresses as :meth:`pod_ips`, in CIDR form (``10.85.0.2/16``)."""
        return tuple(str(a) for a in self._pod_addresses())

    def pod_interfaces(self) -> tuple[Interface, ...]:
        """The interfaces inside the pod."""
        return tuple(i for i in self.interfaces if i.sandbox)


def _bad(plugin: str, what: str) -> CNIProtocolError:
    return CNIProtocolError(f"CNI plugin {plugin} returned an invalid result: {what}")


def _str_list(plugin: str, where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(plugin, f"{where} must be a list of strings")
    return tuple(value)


def _parse_interfaces(plugin: str, value: Any) -> tuple[Interface, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(plugin, "'interfaces' must be a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _bad(plugin, f"interfaces[{i}] needs a string 'name'")
        mtu = item.get("mtu", 0)
        if not isinstance(mtu, int) or isinstance(mtu, bool) or mtu < 0:
            raise _bad(plugin, f"interfaces[{i}].mtu must be a non-negative integer")
        mac, sandbox = item.get("mac", ""), item.get("sandbox", "")
        if not isinstance(mac, str) or not isinstance(sandbox, str):
            raise _bad(plugin, f"interfaces[{i}].mac and .sandbox must be strings")
        out.append(Interface(name=item["name"], mac=mac, sandbox=sandbox, mtu=mtu))
    return tuple(out)


def _parse_ips(plugin: str, value: Any, n_interfaces: int) -> tuple[IPConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(plugin, "'ips' must be a list")
    out = []
    for i, item in enumerate(value):
        where = f"ips[{i}]"
        if not isinstance(item, dict):
            raise _bad(plugin, f"{where} must be an object")
        try:
            address = ipaddress.ip_interface(item.get("address"))
        except ValueError:
            raise _bad(plugin, f"{where}.address {item.get('address')!r} is not CIDR") from None
        if "/" not in str(item.get("address")):
            raise _bad(plugin, f"{where}.address {item.get('address')!r} has no prefix length")
        version = item.get("version")
        if version is not None and version != str(address.version):
            raise _bad(plugin, f"{where}.version {version!r} does not match {address}")
        gateway = None
        if item.get("gateway"):
            try:
                gateway = ipaddress.ip_address(item["gateway"])
            except ValueError:
                raise _bad(plugin, f"{where}.gateway {item['gateway']!r} is no address") from None
            if gateway.version != address.version:
                raise _bad(plugin, f"{where}.gateway {gateway} is not IPv{address.version}")
        index = item.get("interface")
        if index is not None and (
            not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n_interfaces
        ):
            raise _bad(plugin, f"{where}.interface {index!r} is not an index into 'interfaces'")
        out.append(IPConfig(address=address, gateway=gateway, interface=index))
    return tuple(out)


def _parse_routes(plugin: str, value: Any) -> tuple[Route, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(plugin, "'routes' must be a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(plugin, f"routes[{i}] must be an object")
        try:
            dst = ipaddress.ip_network(item.get("dst"), strict=False)
            gw = ipaddress.ip_address(item["gw"]) if item.get("gw") else None
        except (ValueError, TypeError):
            raise _bad(plugin, f"routes[{i}] has an invalid 'dst' or 'gw'") from None
        out.append(Route(dst=dst, gw=gw))
    return tuple(out)


def _parse_dns(plugin: str, value: Any) -> DNS:
    if value is None:
        return DNS()
    if not isinstance(value, dict):
        raise _bad(plugin, "'dns' must be an object")
    domain = value.get("domain", "")
    if not isinstance(domain, str):
        raise _bad(plugin, "dns.domain must be a string")
    return DNS(
        nameservers=_str_list(plugin, "dns.nameservers", value.get("nameservers")),
        domain=domain,
        search=_str_list(plugin, "dns.search", value.get("search")),
        options=_str_list(plugin, "dns.options", value.get("options")),
    )


def parse_result(data: bytes | Mapping[str, Any], expected_version: str, plugin: str) -> Result:
    """Parse an ADD result (bytes a plugin printed, or a cached JSON object).

    :param expected_version: the ``cniVersion`` the plugin was called with; the
        result must carry the same one (the spec requires it).
    :param plugin: the plugin's type, for error messages.
    :raises CNIProtocolError: the output is not a valid result of that version.
    """
    if isinstance(data, Mapping):
        doc: Any = data
    else:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise _bad(plugin, f"not JSON: {bytes(data[:200])!r}") from None
    if not isinstance(doc, dict):
        raise _bad(plugin, "expected a JSON object")
    version = doc.get("cniVersion")
    if version != expected_version:
        raise _bad(plugin, f"cniVersion {version!r}, expected {expected_version!r}")
    if version not in SUPPORTED_VERSIONS:
        raise _bad(plugin, f"cniVersion {version!r} is not supported")
    interfaces = _parse_interfaces(plugin, doc.get("interfaces"))
    return Result(
        cni_version=version,
        interfaces=interfaces,
        ips=_parse_ips(plugin, doc.get("ips"), len(interfaces)),
        routes=_parse_routes(plugin, doc.get("routes")),
        dns=_parse_dns(plugin, doc.get("dns")),
        raw=doc,
    )


def render_result(result: Result) -> bytes:
    """The result as the JSON bytes a plugin would print (the raw object)."""
    return json.dumps(result.raw, sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What ``VERSION`` reports."""

    cni_version: str
    supported_versions: tuple[str, ...]


def parse_version_info(data: bytes, plugin: str) -> VersionInfo:
    """Parse a ``VERSION`` answer.

    :raises CNIProtocolError: not a valid answer.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _bad(plugin, f"VERSION output is not JSON: {bytes(data[:200])!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cniVersion"), str):
        raise _bad(plugin, "VERSION output needs a string 'cniVersion'")
    supported = doc.get("supportedVersions")
    if supported is None:  # 0.1.0 plugins knew only themselves
        supported = [doc["cniVersion"]]
    return VersionInfo(doc["cniVersion"], _str_list(plugin, "supportedVersions", supported))


def parse_failure(
    plugin: str, command: str, network: str, status: int, stdout: bytes, stderr: bytes
) -> CNIPluginError:
    """Turn a failed plugin run into an error carrying the plugin's own message.

    A plugin reports ``{"code": N, "msg": "...", "details": "..."}`` on stdout;
    when it printed no such object, its stderr (or the exit status) is the message.
    """
    try:
        doc = json.loads(stdout)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("msg"), str):
        code = doc.get("code")
        details = doc.get("details")
        return CNIPluginError(
            plugin,
            command,
            network,
            code if isinstance(code, int) else 0,
            doc["msg"],
            details if isinstance(details, str) else "",
        )
    text = (stderr or stdout).decode(errors="replace").strip()
    if not text:
        text = f"exited with status {status} and printed nothing"
    return CNIPluginError(plugin, command, network, 0, text)


# ---------------------------------------------------------------------------
# Requests


@dataclass(frozen=True, slots=True)
class Attachment:
    """One pod's attachment to one network: what every invocation derives from.

    ``capability_args`` maps a capability name (``portMappings``, ``bandwidth``,
    ``ipRanges``, ...) to its value; a plugin receives in ``runtimeConfig`` only
    the ones it lists in its ``capabilities``.
    """

    container_id: str
    netns: str
    ifname: str = "eth0"
    cni_args: str = "IgnoreUnknown=1"
    capability_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_container_id(self.container_id)
        name = self.ifname
        if not name or name in (".", "..") or len(name) > 15 or _IFNAME_BAD.search(name):
            raise InvalidRequestError(f"interface name {name!r} is not a valid Linux name")


@dataclass(frozen=True, slots=True)
class Invocation:
    """One plugin execution: run ``plugin_type`` with ``env`` added and ``stdin`` fed."""

    plugin_type: str
    index: int
    env: Mapping[str, str]
    stdin: bytes


#: Plugins that do nothing without their capability argument, and the argument.
_CAPABILITY_ONLY = {"portmap": "portMappings", "bandwidth": "bandwidth"}
#: Static settings that make ``bandwidth`` shape traffic even without runtimeConfig.
_BANDWIDTH_STATIC = ("ingressRate", "egressRate")


def plugin_skipped(plugin: Mapping[str, Any], capability_args: Mapping[str, Any]) -> bool:
    """Whether running ``plugin`` would change nothing for this pod.

    ``portmap`` without port mappings and ``bandwidth`` without limits cost an
    exec each way (about 4.5 ms) and do nothing, so crio leaves them out and
    records that, so that DEL leaves them out too.
    """
    kind = plugin.get("type")
    capability = _CAPABILITY_ONLY.get(kind) if isinstance(kind, str) else None
    if capability is None:
        return False
    if kind == "bandwidth" and any(plugin.get(k) for k in _BANDWIDTH_STATIC):
        return False
    caps = plugin.get("capabilities") or {}
    wanted = bool(caps.get(capability)) and bool(capability_args.get(capability))
    return not wanted


def _runtime_config(
    plugin: Mapping[str, Any], capability_args: Mapping[str, Any]
) -> dict[str, Any]:
    caps = plugin.get("capabilities")
    if not isinstance(caps, dict):
        return {}
    return {k: v for k, v in capability_args.items() if caps.get(k) is True and v}


def plugin_stdin(
    name: str,
    cni_version: str,
    plugin: Mapping[str, Any],
    capability_args: Mapping[str, Any],
    prev_result: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON a plugin reads: its config with the list's name and version,
    ``runtimeConfig`` for its capabilities, and ``prevResult`` when given."""
    conf = dict(plugin)
    conf["name"] = name
    conf["cniVersion"] = cni_version
    runtime_config = _runtime_config(plugin, capability_args)
    if runtime_config:
        conf["runtimeConfig"] = runtime_config
    else:
        conf.pop("runtimeConfig", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    if extra:
        conf.update(extra)
    return json.dumps(conf, separators=(",", ":")).encode()


def command_env(
    command: str, cni_path: str, attachment: Attachment | None = None
) -> dict[str, str]:
    """The ``CNI_*`` environment for one invocation (GC, STATUS and VERSION take no attachment)."""
    env = {"CNI_COMMAND": command, "CNI_PATH": cni_path}
    if attachment is not None:
        env.update(
            CNI_CONTAINERID=attachment.container_id,
            CNI_NETNS=attachment.netns,
            CNI_IFNAME=attachment.ifname,
            CNI_ARGS=attachment.cni_args,
        )
    return env


class Operation:
    """ADD, DEL or CHECK of one attachment over a network list, step by step.

    Use::

        op = Operation("ADD", name, version, plugins, attachment, cni_path)
        while (inv := op.next_invocation()) is not None:
            status, out, err = run(inv)          # the caller's I/O
            op.receive(status, out, err)         # raises CNIPluginError
        op.result                                # ADD: the final Result

    :param plugins: the list's plugin configs in list order.
    :param skipped: indices of plugins to leave out (ADD decides them with
        :func:`plugin_skipped`; DEL and CHECK get ADD's choice).
    :param cached: for DEL and CHECK, ADD's result (``prevResult``).
    :param keep_going: DEL only: a failing plugin does not stop the list; its
        error is kept in :attr:`errors` (for undoing an ADD that stopped
        midway, when some plugins have nothing to delete and may say so).
    """

    def __init__(
        self,
        command: str,
        name: str,
        cni_version: str,
        plugins: Sequence[Mapping[str, Any]],
        attachment: Attachment,
        cni_path: str,
        *,
        skipped: Iterable[int] | None = None,
        cached: Mapping[str, Any] | None = None,
        keep_going: bool = False,
    ) -> None:
        if command not in ("ADD", "DEL", "CHECK"):
            raise ValueError(f"not a list operation: {command}")
        if cni_version not in SUPPORTED_VERSIONS:
            raise CNIProtocolError(f"network {name}: cniVersion {cni_version!r} is not supported")
        if command == "CHECK" and cni_version not in CHECK_VERSIONS:
            raise CNIProtocolError(f"network {name}: CHECK needs cniVersion 0.4.0 or later")
        if command == "CHECK" and cached is None:
            raise CNIProtocolError(f"network {name}: CHECK needs the result of ADD")
        if keep_going and command != "DEL":
            raise ValueError("keep_going is for DEL only")
        self.command = command
        self.keep_going = keep_going
        self.errors: list[CNIPluginError] = []
        self.name = name
        self.cni_version = cni_version
        self.plugins = tuple(plugins)
        self.attachment = attachment
        self._env = command_env(command, cni_path, attachment)
        if skipped is None:
            args = attachment.capability_args
            skipped = (i for i, p in enumerate(self.plugins) if plugin_skipped(p, args))
        self.skipped = frozenset(skipped)
        order = range(len(self.plugins))
        self._todo = [i for i in (reversed(order) if command == "DEL" else order)]
        self._todo = [i for i in self._todo if i not in self.skipped]
        self._prev: Mapping[str, Any] | None = cached
        self._current: int | None = None
        self.result: Result | None = (
            parse_result(cached, cni_version, "cache") if cached is not None else None
        )

    def next_invocation(self) -> Invocation | None:
        """The next plugin to run, or None when the operation is complete."""
        if self._current is not None:
            raise RuntimeError("receive() the previous invocation's output first")
        if not self._todo:
            return None
        index = self._todo.pop(0)
        self._current = index
        plugin = self.plugins[index]
        stdin = plugin_stdin(
            self.name,
            self.cni_version,
            plugin,
            self.attachment.capability_args,
            self._prev,
        )
        return Invocation(str(plugin["type"]), index, dict(self._env), stdin)

    def receive(self, status: int, stdout: bytes, stderr: bytes) -> None:
        """Take the output of the invocation last handed out.

        :raises CNIPluginError: the plugin failed (its message verbatim).
        :raises CNIProtocolError: it succeeded but printed an invalid result.
        """
        if self._current is None:
            raise RuntimeError("no invocation is pending")
        index, self._current = self._current, None
        kind = str(self.plugins[index]["type"])
        if status != 0:
            error = parse_failure(kind, self.command, self.name, status, stdout, stderr)
            if self.keep_going:
                self.errors.append(error)
                return
            self._todo.clear()
            raise error
        if self.command != "ADD":
            return
        result = parse_result(stdout, self.cni_version, kind)
        self.result = result
        self._prev = result.raw
