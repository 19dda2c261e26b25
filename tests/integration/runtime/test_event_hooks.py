"""A plugin installed beside crio sees every pod and container event through the hooks."""

from __future__ import annotations

import json
from pathlib import Path

from crio.api import api_pb2 as api
from support.cri import EventWatch, container_config
from support.node import start_node, stop_node

_PLUGIN = """
import json, os
from crio.plugins import hookimpl

_LOG = os.environ["CRIO_TEST_EVENT_LOG"]


def _write(kind, **fields):
    with open(_LOG, "a") as handle:
        handle.write(json.dumps({"hook": kind, **fields}) + "\\n")


@hookimpl
def crio_sandbox_created(sandbox):
    _write("sandbox_created", id=sandbox.pod_sandbox_id, handler=sandbox.runtime_handler)


@hookimpl
def crio_sandbox_stopped(sandbox):
    _write("sandbox_stopped", id=sandbox.pod_sandbox_id)


@hookimpl
def crio_sandbox_removed(sandbox):
    _write("sandbox_removed", id=sandbox.pod_sandbox_id)


@hookimpl
def crio_container_created(container):
    _write("container_created", id=container.container_id, pod=container.pod_sandbox_id)


@hookimpl
def crio_container_started(container):
    _write("container_started", id=container.container_id)


@hookimpl
def crio_container_exited(container):
    _write("container_exited", id=container.container_id, code=container.exit_code,
           reason=container.reason)


@hookimpl
def crio_container_removed(container):
    _write("container_removed", id=container.container_id)
"""


def _install(site: Path) -> None:
    package = site / "crio_event_recorder"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_PLUGIN)
    info = site / "crio_event_recorder-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: crio-event-recorder\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[crio.plugins]\nrecorder = crio_event_recorder\n")
    (info / "RECORD").write_text("")


def test_hooks_see_the_lifecycle(tmp_path: Path) -> None:
    _install(tmp_path / "site")
    log = tmp_path / "events.jsonl"
    node = start_node(env={"PYTHONPATH": str(tmp_path / "site"), "CRIO_TEST_EVENT_LOG": str(log)})
    try:
        pod_id = node.cri.run_pod(node.pod(), runtime_handler="crun")
        cid = node.cri.create(pod_id, container_config("job", ["sh", "-c", "exit 4"]))
        with EventWatch(node.cri) as events:
            node.cri.start(cid)
            events.wait(cid, api.CONTAINER_STOPPED_EVENT)
        node.cri.stop_pod(pod_id)
        node.cri.remove_pod(pod_id)
    finally:
        stop_node(node)
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["hook"] for e in seen] == [
        "sandbox_created", "container_created", "container_started", "container_exited",
        "sandbox_stopped", "container_removed", "sandbox_removed",
    ]  # fmt: skip
    assert seen[0] == {"hook": "sandbox_created", "id": pod_id, "handler": "crun"}
    assert seen[3] == {"hook": "container_exited", "id": cid, "code": 4, "reason": "Error"}
