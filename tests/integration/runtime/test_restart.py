"""crio restarts (cleanly or killed) and finds every pod and container it acknowledged."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from crio.api import api_pb2 as api
from support.cri import EventWatch, container_config, wait_until
from support.node import Node

#: Runs until /tmp/die appears in its rootfs, then exits 5.
UNTIL_TOLD = ["sh", "-c", "while [ ! -e /tmp/die ]; do sleep 0.05; done; exit 5"]


def _rootfs(node: Node, cid: str) -> Path:
    reply = node.cri.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True))
    return Path(json.loads(reply.info["info"])["rootfs"])


def test_restart_keeps_running_containers_and_sees_exits_while_down(
    node: Node, handler: str
) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    steady = node.cri.create(pod_id, container_config("steady", UNTIL_TOLD), start=True)
    doomed = node.cri.create(pod_id, container_config("doomed", UNTIL_TOLD), start=True)
    created = node.cri.create(pod_id, container_config("created"))
    started = ["sh", "-c", "cut -d' ' -f22 /proc/1/stat"]  # PID 1's start time
    stat_before = node.cri.exec(steady, started).stdout
    doomed_rootfs, steady_rootfs = _rootfs(node, doomed), _rootfs(node, steady)
    exit_file = node.base / "exits" / doomed

    def end_doomed_while_down() -> None:
        (doomed_rootfs / "tmp" / "die").write_text("")
        wait_until(exit_file.exists, what="conmon wrote the exit file")

    node.restart(between=end_doomed_while_down)
    assert {c.id for c in node.cri.containers()} == {steady, doomed, created}
    status = node.cri.status(doomed)
    assert (status.state, status.exit_code, status.reason) == (api.CONTAINER_EXITED, 5, "Error")
    assert node.cri.status(steady).state == api.CONTAINER_RUNNING
    assert node.cri.exec(steady, started).stdout == stat_before  # the same process
    assert node.cri.status(created).state == api.CONTAINER_CREATED
    node.cri.start(created)
    assert node.cri.status(created).state == api.CONTAINER_RUNNING
    # The exit of a container restored running is still noticed and recorded.
    with EventWatch(node.cri) as events:
        (steady_rootfs / "tmp" / "die").write_text("")
        events.wait(steady, api.CONTAINER_STOPPED_EVENT)
    assert node.cri.status(steady).exit_code == 5


def test_acknowledged_objects_survive_a_crash(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    cid = node.cri.create(pod_id, container_config("c", UNTIL_TOLD), start=True)
    removed = node.cri.create(pod_id, container_config("gone"))
    node.cri.remove(removed)
    rootfs = _rootfs(node, cid)
    node.restart(signal.SIGKILL)
    assert [p.id for p in node.cri.pods()] == [pod_id]
    assert [c.id for c in node.cri.containers()] == [cid]
    assert node.cri.status(cid).state == api.CONTAINER_RUNNING
    with EventWatch(node.cri) as events:
        (rootfs / "tmp" / "die").write_text("")
        events.wait(cid, api.CONTAINER_STOPPED_EVENT)
    status = node.cri.status(cid)
    assert (status.state, status.exit_code) == (api.CONTAINER_EXITED, 5)
    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)
    assert node.cri.pods() == []
