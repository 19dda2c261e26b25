"""The ``containers`` fixture: real busybox containers, removed after each test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from runc_containers import Containers


@pytest.fixture
def containers() -> Iterator[Containers]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made = Containers()
    try:
        yield made
    finally:
        made.cleanup()
