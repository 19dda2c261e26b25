"""The ``containers`` fixture: real busybox containers, removed after each test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from runc_containers import Containers

from support.node import Node, start_node, stop_node


@pytest.fixture
def containers() -> Iterator[Containers]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made = Containers()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def node() -> Iterator[Node]:
    """A started crio (busybox and pause images, pods on a loopback-only CNI network)."""
    started = start_node(None)
    started.use_loopback_network()
    try:
        yield started
    finally:
        stop_node(started)
