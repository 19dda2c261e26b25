"""Integration tests use real host components and need root; else they skip, saying why."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support.daemon import CrioProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (real runc, mounts, netns)")
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def crio() -> Iterator[CrioProcess]:
    """A crio daemon (not yet started) with private directories, killed and removed after."""
    process = CrioProcess()
    try:
        yield process
    finally:
        process.cleanup()
