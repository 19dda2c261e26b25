"""Every failure crio logs names the object, the operation and the cause.

Failures of several kinds are provoked through CRI (bad input, a missing
image, a name taken twice, a runtime that refuses a command, a crash
followed by a restart), then every failure line of the daemon's log is
checked: an RPC failure reads ``RPC (OBJECT) failed: CODE: CAUSE``; any
other warning or error names a pod sandbox, container, image or runtime
handler and gives its cause after a colon.
"""

from __future__ import annotations

import re
import signal

import grpc

from crio.api import api_pb2 as api
from crio.server import HANDLERS
from support.crashpoint import crash
from support.cri import container_config, rpc_error

#: "2026-11-28 01:02:03,456 LEVEL logger: message"
LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$")
RPC_FAILURE = re.compile(
    r"^(?P<rpc>[A-Za-z]+) \((?P<subject>(pod sandbox|container|image) [^)]+)\) failed: "
    r"(?P<code>[A-Z_]+): (?P<cause>.+)$"
)
OBJECT = re.compile(r"(pod sandbox|container|image|runtime handler|store container|CNI) \S+")


def _failure_lines(log: str) -> list[tuple[str, str, str]]:
    lines = []
    for raw in log.splitlines():
        match = LINE.match(raw)
        if match is None or not match["logger"].startswith("crio"):
            continue
        message = match["message"]
        if match["level"] in ("WARNING", "ERROR", "CRITICAL") or " failed" in message:
            lines.append((match["level"], match["logger"], message))
    return lines


def test_failure_lines_name_object_operation_and_cause(held_node: object) -> None:
    node, hold = held_node()  # type: ignore[operator]
    pod_id = node.cri.run_pod(node.pod(), runtime_handler="runc")
    missing = container_config("c", image="localhost/no-such-image:1")
    assert rpc_error(node.cri.create, pod_id, missing).code() == grpc.StatusCode.NOT_FOUND
    taken = node.pod()
    node.cri.run_pod(taken, runtime_handler="runc")
    assert rpc_error(node.cri.run_pod, taken).code() == grpc.StatusCode.ALREADY_EXISTS
    bad_sysctl = node.pod(sysctls={"kernel.no_such_sysctl": "1"})
    assert rpc_error(node.cri.run_pod, bad_sysctl).code() == grpc.StatusCode.INVALID_ARGUMENT
    lost = container_config("lost", ["/no/such/binary"])
    assert rpc_error(node.cri.create, pod_id, lost).code() == grpc.StatusCode.INTERNAL
    cid = node.cri.create(pod_id, container_config("c"), start=True)
    error = rpc_error(node.cri.rt.ExecSync, api.ExecSyncRequest(container_id=cid, cmd=["/nope"]))
    assert error.code() == grpc.StatusCode.INTERNAL
    # A crash in the middle of a create: the restart logs what it rolls back.
    crash(node, hold, "create", lambda: node.cri.create(pod_id, container_config("cut")))
    node.restart(signal.SIGTERM)

    lines = _failure_lines(node.crio.log_text())
    rpc_failures = [m for _, _, message in lines if (m := RPC_FAILURE.match(message))]
    assert {(m["rpc"], m["code"]) for m in rpc_failures} >= {
        ("CreateContainer", "NOT_FOUND"),
        ("RunPodSandbox", "ALREADY_EXISTS"),
        ("RunPodSandbox", "INVALID_ARGUMENT"),
        ("CreateContainer", "INTERNAL"),
        ("ExecSync", "INTERNAL"),
    }
    for match in rpc_failures:
        assert match["rpc"] in HANDLERS and match["cause"].strip(), match.string
    assert any("CreateContainer was interrupted by a crash; rolled back" in m for _, _, m in lines)
    for level, logger, message in lines:
        if RPC_FAILURE.match(message):
            continue
        assert OBJECT.search(message), f"{level} {logger}: {message!r} names no object"
        assert ": " in message or "; " in message, f"{level} {logger}: {message!r} gives no cause"
    assert "failed with an unexpected error" not in node.crio.log_text()
