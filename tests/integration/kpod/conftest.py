"""One crio node for the package: kpod's commands run against what crio made over CRI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.node import Node, start_node, stop_node


@pytest.fixture(scope="package")
def node() -> Iterator[Node]:
    started = start_node(None)
    try:
        yield started
    finally:
        stop_node(started)
