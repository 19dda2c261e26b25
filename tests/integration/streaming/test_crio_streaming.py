"""Exec, Attach and PortForward end to end: a real crio, real containers, independent clients.

The CRI calls go over crio's gRPC socket; the streams over the URL crio
returns, with the spec-written SPDY client or websocket-client.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
import websocket

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


def test_exec_output_and_exit_code(node: Node) -> None:
    _, cid = running(node, ["sleep", "1000"])
    url = exec_url(node, cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert url.startswith("http://127.0.0.1:") and "/exec/" in url
    outcome = asyncio.run(exec_session(url))
    assert (outcome.stdout, outcome.stderr) == (b"out\n", b"err\n")
    assert outcome.status["reason"] == "NonZeroExitCode"
    assert outcome.exit_code == 3


def test_exec_stdin_tty_and_resize(node: Node) -> None:
    _, cid = running(node, ["sleep", "1000"])
    payload = os.urandom(100_000)
    url = exec_url(node, cid, ["cat"], stdin=True, stderr=False)
    outcome = asyncio.run(exec_session(url, stdin=payload, stderr=False))
    assert outcome.stdout == payload

    url = exec_url(
        node,
        cid,
        ["sh", "-c", "while read x; do stty size; done"],
        tty=True,
        stdin=True,
        stderr=False,
    )

    async def resize_session() -> bytes:
        client = await SpdyClient.connect(url)
        error = await client.open_stream({"streamType": "error"})
        stdin = await client.open_stream({"streamType": "stdin"})
        stdout = await client.open_stream({"streamType": "stdout"})
        resize = await client.open_stream({"streamType": "resize"})
        await resize.write(b'{"Width":132,"Height":43}\n')
        seen = b""
        for _ in range(50):  # the runtime applies it on SIGWINCH: ask until it shows
            await stdin.write(b"\n")
            seen = await _next_answer(stdout, seen)
            if b"43 132" in seen:
                break
        await stdin.write(b"\x04")
        status = await error.read_all()
        await client.close()
        assert status == b'{"status": "Success"}'
        return seen

    assert b"43 132" in asyncio.run(resize_session())


def test_fifty_concurrent_execs(node: Node) -> None:
    _, cid = running(node, ["sleep", "1000"])
    urls = [exec_url(node, cid, ["sh", "-c", f"echo {i}; exit {i % 4}"]) for i in range(50)]

    async def all_of_them() -> list[Any]:
        return await asyncio.gather(*(exec_session(url) for url in urls))

    outcomes = asyncio.run(all_of_them())
    assert [o.stdout for o in outcomes] == [f"{i}\n".encode() for i in range(50)]
    assert [o.exit_code for o in outcomes] == [i % 4 for i in range(50)]


def _sleepers(node: Node, cid: str) -> int:
    """How many `sleep 999` (the exec'd process) run in the container."""
    out = node.cri.exec(cid, ["sh", "-c", "ps -o args | grep -c '^sleep 999'"]).stdout
    return int(out)


def test_disconnect_kills_the_exec(node: Node) -> None:
    _, cid = running(node, ["sleep", "1000"])
    url = exec_url(node, cid, ["sh", "-c", "echo started; exec sleep 999"], stderr=False)

    async def leave_early() -> None:
        client = await SpdyClient.connect(url)
        await client.open_stream({"streamType": "error"})
        stdout = await client.open_stream({"streamType": "stdout"})
        assert b"started" in await stdout.read()
        assert _sleepers(node, cid) == 1
        await client.close()

    asyncio.run(leave_early())
    for _ in range(200):
        if _sleepers(node, cid) == 0:
            break
    assert _sleepers(node, cid) == 0


def test_token_is_single_use(node: Node) -> None:
    _, cid = running(node, ["sleep", "1000"])
    url = exec_url(node, cid, ["true"])
    asyncio.run(exec_session(url))
    with pytest.raises(HandshakeError) as again:
        asyncio.run(exec_session(url))
    assert again.value.status == 404


def test_websocket_exec(node: Node) -> None:
    _, cid = running(node, ["sleep", "1000"])
    url = exec_url(node, cid, ["sh", "-c", "cat; exit 2"], stdin=True).replace("http", "ws", 1)
    ws = websocket.create_connection(url, subprotocols=["v5.channel.k8s.io"], timeout=30)
    ws.send_binary(b"\x00hello ws")
    ws.send_binary(b"\xff\x00")
    got: dict[int, bytes] = {}
    while True:
        opcode, frame = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        got[frame[0]] = got.get(frame[0], b"") + frame[1:]
    ws.close()
    assert got[1] == b"hello ws"
    assert b'"message": "2"' in got[3]


def test_attach_to_a_container_writing_output(node: Node) -> None:
    _, cid = running(node, ["sh", "-c", "while read l; do echo got $l; done"], stdin=True)
    url = node.cri.rt.Attach(
        api.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)
    ).url
    assert "/attach/" in url

    async def attach() -> bytes:
        client = await SpdyClient.connect(url)
        await client.open_stream({"streamType": "error"})
        stdin = await client.open_stream({"streamType": "stdin"})
        stdout = await client.open_stream({"streamType": "stdout"})
        await client.open_stream({"streamType": "stderr"})
        await stdin.write(b"hello\n")
        seen = b""
        while b"got hello\n" not in seen:
            chunk = await stdout.read()
            assert chunk
            seen += chunk
        await client.close()
        return seen

    assert asyncio.run(attach()) == b"got hello\n"
    assert node.cri.status(cid).state == api.CONTAINER_RUNNING  # detached, still running


def _forward(url: str, port: int, payload: bytes) -> bytes:
    async def run() -> bytes:
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        headers = {"port": str(port), "requestID": "0"}
        error = await client.open_stream({**headers, "streamType": "error"})
        await error.close()
        data = await client.open_stream({**headers, "streamType": "data"})
        await data.write(payload)
        got = b""
        while len(got) < len(payload):
            chunk = await data.read()
            assert chunk, await error.read_all()
            got += chunk
        await client.close()
        return got

    return asyncio.run(run())


def test_port_forward_into_a_pod(node: Node) -> None:
    pod, _ = running(node, ["nc", "-ll", "-p", "8080", "-e", "/bin/cat"])
    payload = os.urandom(300_000)
    for _ in range(100):  # until the listener is up
        url = node.cri.rt.PortForward(api.PortForwardRequest(pod_sandbox_id=pod, port=[8080])).url
        try:
            assert _forward(url, 8080, payload) == payload
            return
        except AssertionError as exc:
            if b"refused" not in str(exc).encode().lower():
                raise
    raise AssertionError("the pod never listened on 8080")


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


def test_stopped_container_and_bad_ports_are_refused(node: Node) -> None:
    pod, cid = running(node, ["sleep", "1000"])
    node.cri.stop(cid)
    for call, request in (
        (node.cri.rt.Exec, api.ExecRequest(container_id=cid, cmd=["true"], stdout=True)),
        (node.cri.rt.Attach, api.AttachRequest(container_id=cid, stdout=True)),
    ):
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert cid in error.details()
    error = rpc_error(node.cri.rt.PortForward, api.PortForwardRequest(pod_sandbox_id=pod, port=[0]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "port 0" in error.details()
    error = rpc_error(node.cri.rt.PortForward, api.PortForwardRequest(pod_sandbox_id="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def _next_answer(stdout: Any, seen: bytes) -> bytes:
    """Read until one more `stty size` answer (a size, or its complaint about 0x0) arrives."""
    answers = len(re.findall(rb"(\d+ \d+|stty: [^\r]*)\r\n", seen))
    while len(re.findall(rb"(\d+ \d+|stty: [^\r]*)\r\n", seen)) == answers:
        chunk = await stdout.read()
        assert chunk, f"output ended: {seen!r}"
        seen += chunk
    return seen


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
