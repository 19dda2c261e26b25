"""Containers through CRI with runc and crun under conmon: lifecycle, logs, exec, OOM."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from crio.api import api_pb2 as api
from support.cri import EventWatch, container_config, rpc_error, wait_until
from support.node import Node

TERM_AWARE = ["sh", "-c", "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done"]


def test_container_lifecycle(node: Node, handler: str) -> None:
    config = node.pod(labels={"app": "x"})
    pod_id = node.cri.run_pod(config, runtime_handler=handler)
    cid = node.cri.create(pod_id, container_config("web", TERM_AWARE, labels={"c": "1"}))
    status = node.cri.status(cid)
    assert status.state == api.CONTAINER_CREATED
    assert status.created_at > 0 and status.started_at == 0
    assert status.image.image == "localhost/busybox:latest"
    assert status.image_ref.startswith("sha256:")
    assert status.log_path == str(Path(config.log_directory) / "web" / "0.log")
    with EventWatch(node.cri) as events:
        node.cri.start(cid)
        events.wait(cid, api.CONTAINER_STARTED_EVENT)
    status = node.cri.status(cid)
    assert status.state == api.CONTAINER_RUNNING
    assert status.started_at >= status.created_at
    [listed] = node.cri.containers(pod_sandbox_id=pod_id)
    assert listed.id == cid and listed.labels["c"] == "1"
    assert node.cri.exec(cid, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"sh\0-c\0")
    node.cri.stop(cid, timeout=30)  # the trap ends it at once: no 30 s wait
    status = node.cri.status(cid)
    assert status.state == api.CONTAINER_EXITED
    assert (status.exit_code, status.reason) == (0, "Completed")
    assert status.finished_at >= status.started_at
    log = Path(status.log_path).read_bytes()
    assert b" stdout F ready\n" in log
    node.cri.stop(cid)  # stopping a stopped container is fine
    node.cri.remove(cid)
    node.cri.remove(cid)  # and removing a removed one
    assert rpc_error(node.cri.status, cid).code() is grpc.StatusCode.NOT_FOUND
    assert rpc_error(node.cri.stop, cid).code() is grpc.StatusCode.NOT_FOUND
    assert node.cri.containers() == []


def test_stop_timeout_then_sigkill(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    # PID 1 without a TERM handler ignores TERM: only the SIGKILL after the timeout ends it.
    cid = node.cri.create(pod_id, container_config("stubborn", ["sleep", "3600"]), start=True)
    node.cri.stop(cid, timeout=1)
    status = node.cri.status(cid)
    assert (status.state, status.exit_code, status.reason) == (api.CONTAINER_EXITED, 137, "Error")


def test_exit_is_recorded_and_announced(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    cid = node.cri.create(pod_id, container_config("job", ["sh", "-c", "echo done; exit 3"]))
    with EventWatch(node.cri) as events:
        node.cri.start(cid)
        event = events.wait(cid, api.CONTAINER_STOPPED_EVENT)
    [reported] = [s for s in event.containers_statuses if s.id == cid]
    assert (reported.state, reported.exit_code, reported.reason) == (
        api.CONTAINER_EXITED, 3, "Error",
    )  # fmt: skip
    assert event.pod_sandbox_status.id == pod_id
    status = node.cri.status(cid)
    assert (status.state, status.exit_code) == (api.CONTAINER_EXITED, 3)
    exited = api.ContainerStateValue(state=api.CONTAINER_EXITED)
    assert [c.id for c in node.cri.containers(state=exited)] == [cid]


def test_exec_sync_output_exit_code_and_timeout(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    cid = node.cri.create(pod_id, container_config("c", envs={"GREETING": "hi"}), start=True)
    reply = node.cri.exec(cid, ["sh", "-c", "echo $GREETING; echo oops >&2; printf tail; exit 7"])
    assert (reply.stdout, reply.stderr, reply.exit_code) == (b"hi\ntail", b"oops\n", 7)
    error = rpc_error(node.cri.exec, cid, ["sleep", "30"], timeout=1)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "timed out after 1 seconds" in error.details()
    # The timed-out process was killed: only PID 1 and the new exec remain.
    ps = node.cri.exec(cid, ["ps", "-o", "comm"]).stdout.decode().split()
    assert "sleep" in ps and ps.count("sleep") == 1  # PID 1 itself is "sleep 3600"
    error = rpc_error(node.cri.exec, cid, ["/no/such/binary"])
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "no/such/binary" in error.details()


def test_logs_partial_lines_and_reopen(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    script = (
        "printf 'abc'; sleep 0.2; printf 'def\\n'; echo err >&2; "
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after; sleep 3600"
    )
    cid = node.cri.create(pod_id, container_config("logger", ["sh", "-c", script]), start=True)
    log_path = Path(node.cri.status(cid).log_path)
    wait_until(lambda: "stderr F err" in log_path.read_text())
    records = [line.split(" ", 3)[1:] for line in log_path.read_text().splitlines()]
    assert ["stdout", "P", "abc"] in records
    assert ["stdout", "F", "def"] in records
    assert ["stderr", "F", "err"] in records
    rotated = log_path.with_name("0.log.1")
    os.rename(log_path, rotated)
    node.cri.rt.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=cid))
    assert log_path.exists()
    node.cri.exec(cid, ["touch", "/tmp/go"])
    wait_until(lambda: "after" in log_path.read_text())
    assert "after" not in rotated.read_text()


def test_oom_kill_is_reported(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    resources = api.LinuxContainerResources(memory_limit_in_bytes=16 * 1024 * 1024)
    # tail keeps the whole endless "line" of /dev/zero in memory.
    config = container_config("hog", ["tail", "/dev/zero"], resources=resources)
    cid = node.cri.create(pod_id, config)
    with EventWatch(node.cri) as events:
        node.cri.start(cid)
        events.wait(cid, api.CONTAINER_STOPPED_EVENT)
    status = node.cri.status(cid)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")
