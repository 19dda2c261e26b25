"""Finding the network configuration in a CNI config directory.

Files ending in ``.conflist`` hold a list of plugins; ``.conf`` and ``.json``
hold a single plugin, treated as a list of one. The network used is the one
named ``cni_default_network``, else the first valid file by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["InvalidNetworkConfigError", "NetworkList", "find_network", "parse_network"]

CONFIG_SUFFIXES = (".conflist", ".conf", ".json")


class InvalidNetworkConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class NetworkList:
    """One network: its name, CNI version, plugin configs in order, and source file."""

    name: str
    cni_version: str
    plugins: Sequence[Mapping[str, Any]]
    source: str
    raw: Mapping[str, Any]


def parse_network(source: str, data: bytes) -> NetworkList:
    """Parse one config file's bytes (pure: no file access)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidNetworkConfigError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidNetworkConfigError(f"{source}: expected a JSON object")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidNetworkConfigError(f"{source}: missing network 'name'")
    if source.endswith(".conflist"):
        plugins = doc.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise InvalidNetworkConfigError(f"{source}: 'plugins' must be a non-empty list")
    else:
        plugins = [doc]
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            raise InvalidNetworkConfigError(f"{source}: plugins[{index}] has no 'type'")
    version = doc.get("cniVersion", "")
    if not isinstance(version, str):
        raise InvalidNetworkConfigError(f"{source}: 'cniVersion' must be a string")
    return NetworkList(name=name, cni_version=version, plugins=plugins, source=source, raw=doc)


def _plugin_missing(network: NetworkList, plugin_dirs: Sequence[str]) -> str | None:
    for plugin in network.plugins:
        kind = plugin["type"]
        if "/" in kind or not any((Path(d) / kind).is_file() for d in plugin_dirs):
            return kind
    return None


def find_network(
    network_dir: str, plugin_dirs: Sequence[str], wanted: str = ""
) -> tuple[NetworkList | None, str]:
    """The network to use and, when there is none, why not."""
    directory = Path(network_dir)
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix in CONFIG_SUFFIXES)
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
