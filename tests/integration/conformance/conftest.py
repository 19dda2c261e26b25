"""The CRI conformance cases, each run on runc, crun and a pod VM: one crio for the package.

The VM handler's pods are shared by the cases that can share them (a pod VM
boots once, not once per case); see :mod:`support.conformance`. At the end,
crio's log must show no RPC that failed with an unexpected exception.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.conformance import (
    HANDLERS,
    VM_HANDLER,
    Case,
    Cluster,
    start_cluster,
    stop_cluster,
)
from support.vm import vm_assets_or_skip


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    try:
        assets = vm_assets_or_skip()
    except pytest.skip.Exception as exc:
        assets, why = None, str(exc)  # runc and crun still run; the VM cases skip
    else:
        why = ""
    started = start_cluster(assets, why)
    try:
        yield started
        assert started.unexpected_errors() == []
    finally:
        stop_cluster(started)


@pytest.fixture(params=HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def case(cluster: Cluster, handler: str) -> Iterator[Case]:
    if handler == VM_HANDLER and cluster.no_vm:
        pytest.skip(cluster.no_vm)
    made = Case(cluster, handler)
    try:
        yield made
    finally:
        made.cleanup()
