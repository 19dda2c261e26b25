"""Fixtures of the chaos tests: crio nodes whose runc or bridge plugin can be held (crashpoint)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from support.cni import CNIEnv
from support.crashpoint import Hold
from support.node import HANDLERS, Node, start_node, stop_node


@pytest.fixture
def held_node(tmp_path: Path) -> Iterator[Any]:
    """``held_node()``: a crio whose runc can be held at one call; leak-checked after."""
    nodes: list[Node] = []

    def make(runtime: Mapping[str, Any] | None = None) -> tuple[Node, Hold]:
        hold = Hold(tmp_path / "bin", "/usr/bin/runc")
        node = start_node(
            {
                "crio.runtime.runtimes.runc": {"runtime_path": str(hold.path)},
                "crio.runtime": dict(runtime or {}),
            }
        )
        nodes.append(node)
        return node, hold

    try:
        yield make
    finally:
        for node in nodes:
            stop_node(node)


@pytest.fixture
def cni_node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Node, CNIEnv, Hold]]:
    """A crio with a private bridge network whose bridge plugin can be held at ADD or DEL
    (indirect parameter: more ``[crio.runtime]`` keys)."""
    plugins = tmp_path / "cni-bin"
    hold = Hold(plugins, "/usr/lib/cni/bridge", name="hold-bridge")
    node = start_node(
        {
            "crio.network": {"plugin_dirs": [str(plugins), "/usr/lib/cni"]},
            "crio.runtime": dict(getattr(request, "param", None) or {}),
        }
    )
    cni = CNIEnv(node.base)
    doc = cni.conflist(portmap=False)
    doc["plugins"][0]["type"] = "hold-bridge"
    cni.write(doc)
    try:
        yield node, cni, hold
    finally:
        try:
            stop_node(node)
        finally:
            leftovers = cni.leftovers()
            cni.cleanup()
        assert not any(leftovers.values()), leftovers


@pytest.fixture
def node() -> Iterator[Node]:
    """A started crio (both handlers, busybox and pause images); checked for leaks after."""
    started = start_node(None)
    try:
        yield started
    finally:
        stop_node(started)


@pytest.fixture(params=HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    return str(request.param)
