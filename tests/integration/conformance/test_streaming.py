"""Exec, Attach and PortForward through crio's streaming server, on runc, crun and in a pod VM.

The CRI calls go over crio's gRPC socket; the streams over the URL crio
returns, with the spec-written SPDY client or websocket-client. A pod VM's
sessions go through its agent; nothing here may tell them apart.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
import websocket

from crio.api import api_pb2 as api
from support.conformance import Case
from support.cri import rpc_error, wait_until
from support.spdy_client import SpdyClient, exec_session

pytestmark = pytest.mark.slow


def exec_url(case: Case, cid: str, cmd: Sequence[str], **flags: bool) -> str:
    request = api.ExecRequest(container_id=cid, cmd=list(cmd), stdout=True, stderr=True)
    for name, value in flags.items():
        setattr(request, name, value)
    return str(case.cri.rt.Exec(request).url)


def test_exec_output_and_exit_code(case: Case) -> None:
    cid = case.run()
    url = exec_url(case, cid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert url.startswith("http://127.0.0.1:") and "/exec/" in url
    outcome = asyncio.run(exec_session(url))
    assert (outcome.stdout, outcome.stderr) == (b"out\n", b"err\n")
    assert outcome.status["reason"] == "NonZeroExitCode"
    assert outcome.exit_code == 3


async def _next_answer(stdout: Any, seen: bytes) -> bytes:
    """Read until one more `stty size` answer (a size, or its complaint about 0x0) arrives."""
    answers = len(re.findall(rb"(\d+ \d+|stty: [^\r]*)\r\n", seen))
    while len(re.findall(rb"(\d+ \d+|stty: [^\r]*)\r\n", seen)) == answers:
        chunk = await stdout.read()
        assert chunk, f"output ended: {seen!r}"
        seen += chunk
    return seen


def test_exec_stdin_tty_and_resize(case: Case) -> None:
    cid = case.run()
    payload = os.urandom(100_000)
    url = exec_url(case, cid, ["cat"], stdin=True, stderr=False)
    assert asyncio.run(exec_session(url, stdin=payload, stderr=False)).stdout == payload

    cmd = ["sh", "-c", "while read x; do stty size; done"]
    url = exec_url(case, cid, cmd, tty=True, stdin=True, stderr=False)

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


def test_concurrent_execs(case: Case) -> None:
    cid = case.run()
    urls = [exec_url(case, cid, ["sh", "-c", f"echo {i}; exit {i % 4}"]) for i in range(50)]

    async def all_of_them() -> list[Any]:
        return await asyncio.gather(*(exec_session(url) for url in urls))

    outcomes = asyncio.run(all_of_them())
    assert [o.stdout for o in outcomes] == [f"{i}\n".encode() for i in range(50)]
    assert [o.exit_code for o in outcomes] == [i % 4 for i in range(50)]


def _sleepers(case: Case, cid: str) -> int:
    """How many `sleep 999` (the exec'd process) run in the container."""
    return int(case.exec(cid, ["sh", "-c", "ps -o args | grep -c '^sleep 999'"]).stdout)


def test_disconnect_kills_the_exec(case: Case) -> None:
    cid = case.run()
    url = exec_url(case, cid, ["sh", "-c", "echo started; exec sleep 999"], stderr=False)

    async def leave_early() -> None:
        client = await SpdyClient.connect(url)
        await client.open_stream({"streamType": "error"})
        stdout = await client.open_stream({"streamType": "stdout"})
        assert b"started" in await stdout.read()
        assert _sleepers(case, cid) == 1
        await client.close()

    asyncio.run(leave_early())
    wait_until(lambda: _sleepers(case, cid) == 0, timeout=300, what="the exec was killed")


def test_websocket_exec(case: Case) -> None:
    cid = case.run()
    url = exec_url(case, cid, ["sh", "-c", "cat; exit 2"], stdin=True).replace("http", "ws", 1)
    ws = websocket.create_connection(url, subprotocols=["v5.channel.k8s.io"], timeout=300)
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


def test_attach_to_a_container_writing_output(case: Case) -> None:
    cid = case.run(command=["sh", "-c", "while read l; do echo got $l; done"], stdin=True)
    url = case.cri.rt.Attach(
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
    assert case.cri.status(cid).state == api.CONTAINER_RUNNING  # detached, still running


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


def test_port_forward_into_a_pod(case: Case) -> None:
    case.run(command=["nc", "-ll", "-p", "8080", "-e", "/bin/cat"], name="echo")
    payload = os.urandom(300_000)
    request = api.PortForwardRequest(pod_sandbox_id=case.pod(), port=[8080])
    for _ in range(300):  # until the listener is up
        try:
            assert _forward(case.cri.rt.PortForward(request).url, 8080, payload) == payload
            return
        except AssertionError as exc:
            if b"refused" not in str(exc).encode().lower():
                raise
    raise AssertionError("the pod never listened on 8080")


def test_stopped_container_is_refused(case: Case) -> None:
    cid = case.run()
    case.cri.stop(cid)
    for call, request in (
        (case.cri.rt.Exec, api.ExecRequest(container_id=cid, cmd=["true"], stdout=True)),
        (case.cri.rt.Attach, api.AttachRequest(container_id=cid, stdout=True)),
    ):
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert cid in error.details()
    request = api.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10)
    assert rpc_error(case.cri.rt.ExecSync, request).code() == grpc.StatusCode.FAILED_PRECONDITION
