"""Finding the network in a config directory, and re-reading it when it changes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from crio_plugins.net_cni.confdir import (
    ConfigWatcher,
    InvalidNetworkConfigError,
    NetworkList,
    find_network,
    parse_network,
)

REPO = Path(__file__).resolve().parents[3]


def conflist(name: str, kind: str = "bridge", version: str = "1.0.0") -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "plugins": [{"type": kind}]}


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A plugin directory holding executables named like plugins (only found, never run)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for kind in ("bridge", "host-local", "portmap"):
        path = directory / kind
        path.write_text("#!/bin/sh\nexit 1\n")
        path.chmod(0o755)
    return directory


def write(directory: Path, name: str, doc: Any) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_shipped_default_conflist_is_valid() -> None:
    path = REPO / "contrib" / "cni" / "10-crio-bridge.conflist"
    network = parse_network(str(path), path.read_bytes())
    assert network.name == "crio"
    assert [p["type"] for p in network.plugins] == ["bridge", "portmap", "bandwidth"]
    assert network.plugins[0]["bridge"] == "cni0"
    assert network.plugins[0]["ipam"]["type"] == "host-local"
    assert network.plugins[0]["ipam"]["ranges"] == [[{"subnet": "10.85.0.0/16"}]]


def test_single_conf_becomes_a_list_of_one() -> None:
    doc = {"cniVersion": "0.4.0", "name": "one", "type": "bridge"}
    network = parse_network("/x/10-one.conf", json.dumps(doc).encode())
    assert network.plugins == (doc,)
    assert network.raw == {"cniVersion": "0.4.0", "name": "one", "plugins": [doc]}
    assert NetworkList.from_raw(network.raw).plugins == (doc,)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}, "'name'"),
        ({"cniVersion": "1.0.0", "name": "a b", "plugins": [{"type": "x"}]}, "'name'"),
        ({"cniVersion": "0.2.0", "name": "n", "plugins": [{"type": "x"}]}, "cniVersion '0.2.0'"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": []}, "non-empty list"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{}]}, r"plugins\[0\]"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../x"}]}, r"plugins\[0\]"),
        (
            {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "x", "capabilities": 1}]},
            "capabilities",
        ),
        (
            {"cniVersion": "1.0.0", "name": "n", "disableCheck": 1, "plugins": [{"type": "x"}]},
            "disableCheck",
        ),
    ],
)
def test_invalid_configs_name_file_and_field(doc: Any, message: str) -> None:
    data = (doc if isinstance(doc, str) else json.dumps(doc)).encode()
    with pytest.raises(InvalidNetworkConfigError, match=message) as info:
        parse_network("/etc/cni/net.d/10-x.conflist", data)
    assert str(info.value).startswith("/etc/cni/net.d/10-x.conflist: ")


def test_first_by_name_unless_default_named(tmp_path: Path, plugin_dir: Path) -> None:
    net_dir = tmp_path / "net.d"
    write(net_dir, "20-b.conflist", conflist("b"))
    write(net_dir, "10-a.conflist", conflist("a"))
    write(net_dir, "05-notes.txt", "ignored")
    network, _ = find_network(str(net_dir), [str(plugin_dir)])
    assert network is not None and network.name == "a"
    network, _ = find_network(str(net_dir), [str(plugin_dir)], "b")
    assert network is not None and network.name == "b"
    network, why = find_network(str(net_dir), [str(plugin_dir)], "c")
    assert network is None and "no network 'c' found" in why


def test_invalid_and_incomplete_files_are_skipped_with_reasons(
    tmp_path: Path, plugin_dir: Path
) -> None:
    net_dir = tmp_path / "net.d"
    write(net_dir, "01-broken.conflist", "{")
    write(net_dir, "02-missing.conflist", conflist("m", kind="macvlan"))
    network, why = find_network(str(net_dir), [str(plugin_dir)])
    assert network is None
    assert "01-broken.conflist: not valid JSON" in why
    assert "plugin 'macvlan' not found" in why
    write(net_dir, "03-good.conflist", conflist("g"))
    network, _ = find_network(str(net_dir), [str(plugin_dir)])
    assert network is not None and network.name == "g"


def test_missing_ipam_plugin(tmp_path: Path, plugin_dir: Path) -> None:
    doc = conflist("n")
    doc["plugins"][0]["ipam"] = {"type": "dhcp"}
    write(tmp_path / "net.d", "10.conflist", doc)
    network, why = find_network(str(tmp_path / "net.d"), [str(plugin_dir)])
    assert network is None and "'dhcp' not found" in why


def test_missing_directory(tmp_path: Path) -> None:
    network, why = find_network(str(tmp_path / "nope"), ["/usr/lib/cni"])
    assert network is None and "cannot read CNI config directory" in why


def test_watcher_reloads_only_on_change(tmp_path: Path, plugin_dir: Path) -> None:
    net_dir = tmp_path / "net.d"
    net_dir.mkdir()
    watcher = ConfigWatcher(str(net_dir), [str(plugin_dir)])
    network, why = watcher.current()
    assert network is None and "no valid network config" in why
    path = write(net_dir, "10-a.conflist", conflist("a"))
    network, _ = watcher.current()
    assert network is not None and network.name == "a"
    loads = watcher.loads
    assert watcher.current()[0] is network
    assert watcher.loads == loads  # unchanged directory: not parsed again
    path.write_text(json.dumps(conflist("renamed")))
    os.utime(path, ns=(1, 1))  # a different mtime even within one clock tick
    network, _ = watcher.current()
    assert network is not None and network.name == "renamed"
    path.unlink()
    assert watcher.current()[0] is None


def test_watcher_notices_a_plugin_installed_later(tmp_path: Path, plugin_dir: Path) -> None:
    net_dir = tmp_path / "net.d"
    write(net_dir, "10.conflist", conflist("n", kind="late"))
    watcher = ConfigWatcher(str(net_dir), [str(plugin_dir)])
    assert watcher.current()[0] is None
    late = plugin_dir / "late"
    late.write_text("#!/bin/sh\n")
    late.chmod(0o755)
    assert watcher.current()[0] is not None
