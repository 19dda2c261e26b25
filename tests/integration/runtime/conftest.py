"""Fixtures for runtime tests: a crio node per test, checked for leaks after."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from support.node import HANDLERS, Node, start_node, stop_node


@pytest.fixture
def node() -> Iterator[Node]:
    """A started crio (both handlers, busybox and pause images); checked for leaks after."""
    started = start_node(None)
    try:
        yield started
    finally:
        stop_node(started)


@pytest.fixture
def make_node() -> Iterator[Any]:
    """Start a crio with extra configuration tables: ``make_node({"crio.runtime": {...}})``."""
    nodes: list[Node] = []

    def make(extra: Mapping[str, Mapping[str, Any]] | None = None) -> Node:
        nodes.append(start_node(extra))
        return nodes[-1]

    try:
        yield make
    finally:
        for started in nodes:
            stop_node(started)


@pytest.fixture(params=HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    return str(request.param)
