"""The streaming server of a real crio: tokens, bad requests, host-network port forward, leaks.

The sessions themselves (exec, attach, port forward, on every runtime) are
in ../conformance/test_streaming.py; here is what does not depend on the runtime.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from crio.api import api_pb2 as api
from support.cri import container_config, rpc_error
from support.node import Node
from support.spdy_client import HandshakeError, SpdyClient, exec_session


def running(
    node: Node, command: Sequence[str], *, host_network: bool = False, **fields: Any
) -> tuple[str, str]:
    pod = node.cri.run_pod(node.pod(host_network=host_network))
    cid = node.cri.create(pod, container_config("c", command, **fields), start=True)
    return pod, cid


def exec_url(node: Node, cid: str, cmd: Sequence[str], **flags: bool) -> str:
    request = api.ExecRequest(container_id=cid, cmd=list(cmd), stdout=True, stderr=True)
    for name, value in flags.items():
        setattr(request, name, value)
    return node.cri.rt.Exec(request).url


def test_token_is_single_use(node: Node) -> None:
    _, cid = running(node, ["sleep", "1000"])
    url = exec_url(node, cid, ["true"])
    asyncio.run(exec_session(url))
    with pytest.raises(HandshakeError) as again:
        asyncio.run(exec_session(url))
    assert again.value.status == 404


def test_port_forward_for_a_host_network_pod(node: Node) -> None:
    pod, _ = running(node, ["sleep", "1000"], host_network=True)

    async def scenario() -> bytes:
        async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.read(100)).upper())
            writer.close()

        listener = await asyncio.start_server(upper, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        request = api.PortForwardRequest(pod_sandbox_id=pod, port=[port])
        url = (await asyncio.to_thread(node.cri.rt.PortForward, request)).url
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        headers = {"port": str(port), "requestID": "0"}
        await client.open_stream({**headers, "streamType": "error"})
        data = await client.open_stream({**headers, "streamType": "data"})
        await data.write(b"host")
        got = await data.read_all()
        await client.close()
        listener.close()
        return got

    assert asyncio.run(scenario()) == b"HOST"


@pytest.mark.parametrize(
    ("request_fields", "code", "words"),
    [
        ({"cmd": ["true"], "stdout": True}, grpc.StatusCode.INVALID_ARGUMENT, "container_id"),
        ({"container_id": "x", "stdout": True}, grpc.StatusCode.INVALID_ARGUMENT, "cmd"),
        (
            {"container_id": "x", "cmd": ["true"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "stdout or stderr",
        ),
        (
            {"container_id": "x", "cmd": ["true"], "tty": True, "stderr": True},
            grpc.StatusCode.INVALID_ARGUMENT,
            "tty and stderr",
        ),
        (
            {"container_id": "nope", "cmd": ["true"], "stdout": True},
            grpc.StatusCode.NOT_FOUND,
            "nope",
        ),
    ],
)
def test_exec_bad_requests(
    node: Node, request_fields: dict[str, Any], code: grpc.StatusCode, words: str
) -> None:
    error = rpc_error(node.cri.rt.Exec, api.ExecRequest(**request_fields))
    assert error.code() == code
    assert words in error.details()


def test_bad_ports_are_refused(node: Node) -> None:
    pod, _ = running(node, ["sleep", "1000"])
    error = rpc_error(node.cri.rt.PortForward, api.PortForwardRequest(pod_sandbox_id=pod, port=[0]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "port 0" in error.details()
    error = rpc_error(node.cri.rt.PortForward, api.PortForwardRequest(pod_sandbox_id="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_sessions_leave_no_fds_or_processes_behind(node: Node) -> None:
    pod, cid = running(node, ["sleep", "1000"], host_network=True)
    crio_pid = node.crio.proc.pid  # type: ignore[union-attr]
    exec_url(node, cid, ["true"])  # warm the gRPC paths up
    baseline = _fds(crio_pid)

    async def sessions() -> None:
        plain = [exec_url(node, cid, ["sh", "-c", "echo x"]) for _ in range(10)]
        await asyncio.gather(*(exec_session(url) for url in plain))
        for _ in range(5):
            url = exec_url(node, cid, ["sh", "-c", "echo x"], tty=True, stderr=False)
            await exec_session(url, tty=True, stderr=False)
        request = api.PortForwardRequest(pod_sandbox_id=pod, port=[9])
        url = (await asyncio.to_thread(node.cri.rt.PortForward, request)).url
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        headers = {"port": "9", "requestID": "0"}
        error = await client.open_stream({**headers, "streamType": "error"})
        await client.open_stream({**headers, "streamType": "data"})
        assert b"error forwarding port 9" in await error.read_all()
        await client.close()

    asyncio.run(sessions())
    for _ in range(100):  # closing sockets is asynchronous on the server side
        if _fds(crio_pid) <= baseline:
            break
        time.sleep(0.02)
    assert _fds(crio_pid) <= baseline
    children = [p for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == crio_pid]
    assert not [p for p in children if "runc" in _cmdline(int(p))]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_busy_stream_port_stops_crio_naming_the_key() -> None:
    from support.daemon import CrioProcess

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        crio = CrioProcess({"crio.api": {"stream_address": "127.0.0.1", "stream_port": port}})
        try:
            crio.start(wait=False)
            assert crio.proc is not None
            assert crio.proc.wait(60) == 1
            assert "crio.api.stream_address" in crio.log_text()
            assert f"127.0.0.1:{port}" in crio.log_text()
        finally:
            crio.cleanup()


def test_stream_port_zero_picks_a_free_port(node: Node) -> None:
    _, cid = running(node, ["sleep", "1000"], host_network=True)
    url = exec_url(node, cid, ["true"])
    port = int(url.split("/")[2].rsplit(":", 1)[1])
    assert port > 0
    assert f"streaming server listening on http://127.0.0.1:{port}" in node.crio.log_text()
