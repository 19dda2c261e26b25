"""A node's layout with private paths: nested directories, shared runtime roots, two crios.

The defaults put crio's exits/, ns/ and version inside its attach directory
(/run/crio), and its runtime roots (/run/runc, /run/crun) are podman's too.
Here the attach directory is crio's whole base directory (holding its socket,
config, store and state as well), and the runtime roots hold containers run
straight by runc and crun. The node tier (tests/node) does the same with the
real default paths and podman.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crio.api import api_pb2 as api
from support.cri import EventWatch, container_config
from support.daemon import CrioProcess
from support.foreign import ForeignContainer
from support.node import HANDLERS, Node, start_node, stop_node

RUNTIMES = {"runc": "/usr/bin/runc", "crun": "/usr/bin/crun"}


def _nested(base: Path) -> dict[str, dict[str, Any]]:
    return {
        "crio": {"version_file": str(base / "version")},
        "crio.runtime": {
            "container_attach_socket_dir": str(base),
            "container_exits_dir": str(base / "exits"),
            "namespaces_dir": str(base / "ns"),
        },
    }


@pytest.fixture
def nested_node() -> Iterator[tuple[Node, list[ForeignContainer]]]:
    node = start_node(_nested)
    foreign = [
        ForeignContainer(RUNTIMES[name], node.base / f"rt-{name}", node.base / "foreign")
        for name in HANDLERS
    ]
    try:
        for container in foreign:
            container.start()
        yield node, foreign
    finally:
        for container in foreign:
            container.remove()
        stop_node(node)


def _exit_seen(node: Node, pod_id: str, code: int) -> str:
    with EventWatch(node.cri) as events:
        config = container_config(f"ends-{code}", ["sh", "-c", f"exit {code}"])
        cid = node.cri.create(pod_id, config, start=True)
        events.wait(cid, api.CONTAINER_STOPPED_EVENT)
    status = node.cri.status(cid)
    assert (status.state, status.exit_code, status.reason) == (api.CONTAINER_EXITED, code, "Error")
    assert status.finished_at >= status.started_at > 0
    return cid


def test_nested_paths_and_foreign_containers_survive_start_restart_and_repair(
    nested_node: tuple[Node, list[ForeignContainer]],
) -> None:
    node, foreign = nested_node
    pods = {handler: node.cri.run_pod(node.pod(), runtime_handler=handler) for handler in HANDLERS}
    live = {
        handler: node.cri.create(pod, container_config("live"), start=True)
        for handler, pod in pods.items()
    }
    for pod in pods.values():
        _exit_seen(node, pod, 7)
    # A crash and a restart with live pods, then a repair with crio stopped.
    node.restart(signal.SIGKILL)
    assert all(f.status() == "running" for f in foreign), [f.status() for f in foreign]
    for handler, pod in pods.items():
        assert node.cri.status(live[handler]).state == api.CONTAINER_RUNNING
        assert (node.base / "ns" / "ipcns" / pod).exists()
        _exit_seen(node, pod, 3)
    for container in foreign:
        mentions = node.crio.log_text().count(f"container {container.container_id} in ")
        assert mentions == 1, node.crio.log_text()[-3000:]
    node.restart(between=lambda: _repair(node))
    assert all(f.status() == "running" for f in foreign), [f.status() for f in foreign]
    for handler, pod in pods.items():
        assert node.cri.status(live[handler]).state == api.CONTAINER_RUNNING
        _exit_seen(node, pod, 4)
    for name in ("exits", "ns", "version", "state", "root", "runroot", "crio.conf", "foreign"):
        assert (node.base / name).exists(), name


def _repair(node: Node) -> None:
    done = subprocess.run(node.crio.command("check", "--repair"), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("table", "key", "path", "message"),
    [
        ("crio", "state_dir", "state", "another crio (pid {pid}) uses this state_dir"),
        (
            "crio.runtime.runtimes.crun",
            "runtime_root",
            "rt-crun",
            "crio.runtime.runtimes.crun.runtime_root: {shared} is in use by another crio "
            "(pid {pid})",
        ),
        (
            "crio.runtime",
            "container_exits_dir",
            "exits",
            "crio.runtime.container_exits_dir: {shared} is in use by another crio (pid {pid})",
        ),
    ],
)
def test_a_second_crio_sharing_a_directory_refuses_to_start(
    node: Node, table: str, key: str, path: str, message: str
) -> None:
    shared = node.base / path
    other = CrioProcess({table: {key: str(shared)}})
    try:
        refused = subprocess.run(other.command(), capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1, refused.stderr
        pid = node.crio.proc.pid  # type: ignore[union-attr]
        assert message.format(shared=shared, pid=pid) in refused.stderr, refused.stderr
    finally:
        other.cleanup()
    pod = node.cri.run_pod(node.pod(), runtime_handler="crun")
    assert node.cri.pod_status(pod).state == api.SANDBOX_READY
