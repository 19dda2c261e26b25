"""Fixtures for net_cni tests with the real CNI plugins in namespaces the tests make."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cni import CNIEnv


@pytest.fixture
def cni_env() -> Iterator[CNIEnv]:
    """A private bridge network (not yet written to its net.d); everything removed after."""
    if shutil.which("iptables") is None or not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("needs iptables and the CNI plugins in /usr/lib/cni")
    base = Path(tempfile.mkdtemp(prefix="crio-cni-", dir="/tmp"))
    env = CNIEnv(base)
    try:
        yield env
    finally:
        env.cleanup()
        shutil.rmtree(base, ignore_errors=True)
