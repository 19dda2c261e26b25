"""Finding the network configuration in a CNI config directory, and noticing changes.

Files ending in ``.conflist`` hold a list of plugins; ``.conf`` and ``.json``
hold a single plugin, treated as a list of one. The network used is the one
named ``cni_default_network``, else the first valid file by name.
:class:`ConfigWatcher` re-reads the directory whenever a file in it was
added, removed or changed, so that a pod created after a config appears uses
it; the check costs one ``scandir`` and a ``stat`` per config file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crio_plugins.net_cni.protocol import SUPPORTED_VERSIONS

__all__ = [
    "ConfigWatcher",
    "InvalidNetworkConfigError",
    "NetworkList",
    "find_network",
    "find_plugin",
    "parse_network",
]

CONFIG_SUFFIXES = (".conflist", ".conf", ".json")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class InvalidNetworkConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class NetworkList:
    """One network: its name, CNI version, plugin configs in order, and source file.

    ``raw`` is the list as a conflist object (a single ``.conf`` is wrapped),
    which is what the result cache stores so DEL runs what ADD ran.
    """

    name: str
    cni_version: str
    plugins: Sequence[Mapping[str, Any]]
    source: str
    raw: Mapping[str, Any]
    disable_check: bool = False
    disable_gc: bool = False

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], source: str = "cache") -> NetworkList:
        """Rebuild from :attr:`raw` (e.g. read back from the result cache)."""
        return parse_network(source + ".conflist", json.dumps(raw).encode())


def _flag(source: str, doc: Mapping[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if isinstance(value, str) and value in ("true", "false"):  # the spec once said string
        return value == "true"
    if not isinstance(value, bool):
        raise InvalidNetworkConfigError(f"{source}: '{key}' must be true or false")
    return value


def parse_network(source: str, data: bytes) -> NetworkList:
    """Parse one config file's bytes (pure: no file access).

    :param source: the file name; its suffix says list or single plugin.
    :raises InvalidNetworkConfigError: naming ``source`` and the field at fault.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidNetworkConfigError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidNetworkConfigError(f"{source}: expected a JSON object")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidNetworkConfigError(
            f"{source}: 'name' must be letters, digits, '_', '.' or '-', got {name!r}"
        )
    version = doc.get("cniVersion", "")
    if not isinstance(version, str):
        raise InvalidNetworkConfigError(f"{source}: 'cniVersion' must be a string")
    if version not in SUPPORTED_VERSIONS:
        raise InvalidNetworkConfigError(
            f"{source}: cniVersion {version!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_VERSIONS)})"
        )
    if source.endswith(".conflist"):
        plugins = doc.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise InvalidNetworkConfigError(f"{source}: 'plugins' must be a non-empty list")
        raw = doc
    else:
        plugins = [doc]
        raw = {"cniVersion": version, "name": name, "plugins": plugins}
    for index, plugin in enumerate(plugins):
        kind = plugin.get("type") if isinstance(plugin, dict) else None
        if not isinstance(kind, str) or not kind or "/" in kind or kind in (".", ".."):
            raise InvalidNetworkConfigError(f"{source}: plugins[{index}] has no valid 'type'")
        caps = plugin.get("capabilities", {})
        if not isinstance(caps, dict):
            raise InvalidNetworkConfigError(
                f"{source}: plugins[{index}].capabilities must be an object"
            )
    return NetworkList(
        name=name,
        cni_version=version,
        plugins=tuple(plugins),
        source=source,
        raw=raw,
        disable_check=_flag(source, doc, "disableCheck"),
        disable_gc=_flag(source, doc, "disableGC"),
    )


def find_plugin(kind: str, plugin_dirs: Sequence[str]) -> str | None:
    """The executable for plugin ``kind``: the first match in ``plugin_dirs``."""
    for directory in plugin_dirs:
        path = os.path.join(directory, kind)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _plugin_missing(network: NetworkList, plugin_dirs: Sequence[str]) -> str | None:
    for plugin in network.plugins:
        kind = plugin["type"]
        if find_plugin(kind, plugin_dirs) is None:
            return kind
        ipam = plugin.get("ipam")
        ipam_kind = ipam.get("type") if isinstance(ipam, dict) else None
        if isinstance(ipam_kind, str) and ipam_kind and find_plugin(ipam_kind, plugin_dirs) is None:
            return ipam_kind
    return None


def _config_files(directory: Path) -> list[Path]:
    with os.scandir(directory) as entries:
        return sorted(
            Path(e.path)
            for e in entries
            if e.name.endswith(CONFIG_SUFFIXES) and not e.name.startswith(".")
        )


def find_network(
    network_dir: str, plugin_dirs: Sequence[str], wanted: str = ""
) -> tuple[NetworkList | None, str]:
    """The network to use and, when there is none, why not (naming each bad file)."""
    directory = Path(network_dir)
    try:
        files = _config_files(directory)
    except OSError as exc:
        return None, f"cannot read CNI config directory {network_dir}: {exc.strerror}"
    problems: list[str] = []
    for path in files:
        try:
            network = parse_network(str(path), path.read_bytes())
        except (InvalidNetworkConfigError, OSError) as exc:
            problems.append(str(exc))
            continue
        if wanted and network.name != wanted:
            continue
        missing = _plugin_missing(network, plugin_dirs)
        if missing:
            problems.append(f"{path}: plugin {missing!r} not found in {', '.join(plugin_dirs)}")
            continue
        return network, ""
    target = f"network {wanted!r}" if wanted else "valid network config"
    detail = f" ({'; '.join(problems)})" if problems else ""
    return None, f"no {target} found in {network_dir}{detail}"


class ConfigWatcher:
    """The current network of a config directory, re-read when the directory changes.

    A snapshot of (name, size, mtime, inode) of every config file decides
    whether to re-parse; while there is no usable network the directory is
    re-read on every call, so that a plugin installed later is found too.
    """

    def __init__(self, network_dir: str, plugin_dirs: Sequence[str], wanted: str = "") -> None:
        self.network_dir = network_dir
        self.plugin_dirs = tuple(plugin_dirs)
        self.wanted = wanted
        self._snapshot: tuple[Any, ...] | None = None
        self._network: NetworkList | None = None
        self._why = "not loaded yet"
        #: How many times the directory was parsed (for tests and debug logs).
        self.loads = 0

    def _take_snapshot(self) -> tuple[Any, ...]:
        try:
            files = _config_files(Path(self.network_dir))
        except OSError as exc:
            return ("error", exc.errno)
        marks = []
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue
            marks.append((path.name, st.st_size, st.st_mtime_ns, st.st_ino))
        return tuple(marks)

    def current(self) -> tuple[NetworkList | None, str]:
        """The network to use now and, when there is none, why not."""
        snapshot = self._take_snapshot()
        if snapshot != self._snapshot or self._network is None:
            self._network, self._why = find_network(self.network_dir, self.plugin_dirs, self.wanted)
            self._snapshot = snapshot
            self.loads += 1
        return self._network, self._why
