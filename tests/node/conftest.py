"""The node tier: crio exactly as ``make run`` starts it, on the node's default paths.

The tier holds /tmp/crio-default-node.lock (exclusive flock) from start to end:
every helper and test that runs crio on the default paths takes it. It
refuses to run, saying why, when a crio already serves the default socket or
when a configuration file would change the defaults.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio.check import serving
from support.default_node import (
    CONFIG_FILES,
    LOCK,
    SOCKET,
    DefaultCrio,
    NodeRun,
    Podman,
    default_node_lock,
    seed_image,
)

BINARIES = ("/usr/bin/runc", "/usr/bin/crun", "/usr/bin/conmon", "/usr/bin/podman")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="the node tier needs root (crio on the node's default paths)")
    for item in items:
        if "tests/node" in str(item.fspath):
            item.add_marker(skip)


def _refusal() -> str:
    """Why the tier cannot run crio on the default paths now, or ""."""
    if serving(SOCKET):
        return (
            f"a crio already serves {SOCKET}: the node tier runs crio on the default paths "
            "and would share them with it; stop that crio first"
        )
    for path in CONFIG_FILES:
        if path.is_file() or (path.is_dir() and any(path.glob("*.conf"))):
            return (
                f"{path} exists: the node tier tests crio's defaults, as `make run` starts it "
                "with no configuration file; move it aside"
            )
    return ""


@pytest.fixture(scope="module")
def node_run() -> Iterator[NodeRun]:
    for binary in BINARIES:
        if not os.access(binary, os.X_OK):
            pytest.skip(f"{binary} is not installed")
    try:
        lock = default_node_lock()
        lock.__enter__()
    except TimeoutError as exc:
        pytest.fail(f"the node tier needs {LOCK}: {exc}")
    try:
        why = _refusal()
        if why:
            pytest.fail(why)
        token = secrets.token_hex(3)
        run = NodeRun(token, DefaultCrio(Path(f"/tmp/crio-node-{token}.log")), Podman())
        try:
            run.scratch.mkdir()
            seed_image(run.image)
            # podman's containers on its default roots (/run/crun, /run/runc), before crio.
            for runtime in ("crun", "runc"):
                run.podman_ids[run.podman.run(runtime, run.image)] = runtime
            run.cri = run.crio.start()
            yield run
        finally:
            log = run.crio.log
            run.cleanup()
            log.unlink(missing_ok=True)
    finally:
        lock.__exit__(None, None, None)
