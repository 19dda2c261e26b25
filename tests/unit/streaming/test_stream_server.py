"""The streaming server on loopback, driven by independent clients.

SPDY through tests/support/spdy_client.py (written from the spec, sharing
no code with crio.streaming), WebSocket through websocket-client. The
runtime behind the server is LocalProcessRuntimeForTests (real local
processes); tests/integration/streaming runs the same against containers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websocket
from local_runtime import LocalProcessRuntimeForTests

from crio.config import ApiConfig
from crio.errors import ResourceExhaustedError
from crio.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from crio.streaming.server import StreamServer
from support.spdy_client import HandshakeError, SpdyClient, exec_session

Scenario = Callable[[StreamServer, LocalProcessRuntimeForTests], Awaitable[None]]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def serve(scenario: Scenario, clock: Clock | None = None, **api: Any) -> None:
    async def main() -> None:
        settings = {"stream_address": "127.0.0.1", "stream_port": 0, **api}
        server = StreamServer(ApiConfig(**settings), clock=clock or Clock())
        await server.start()
        runtime = LocalProcessRuntimeForTests()
        try:
            await asyncio.wait_for(scenario(server, runtime), 60)
        finally:
            await server.close()
            await runtime.close()

    asyncio.run(main())


def exec_url(server: StreamServer, runtime: Any, command: list[str], **kw: Any) -> str:
    return server.url(ExecRequest(runtime, "c1", tuple(command), **kw))


# ----------------------------------------------------------------- exec over SPDY


def test_exec_stdout_stderr_and_exit_code() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        outcome = await exec_session(url)
        assert outcome.protocol == "v4.channel.k8s.io"
        assert (outcome.stdout, outcome.stderr) == (b"out\n", b"err\n")
        assert outcome.status["reason"] == "NonZeroExitCode"
        assert outcome.exit_code == 3

    serve(scenario)


def test_exec_success_status_is_sent() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        outcome = await exec_session(exec_url(server, runtime, ["true"]))
        assert outcome.error == b'{"status": "Success"}'
        assert outcome.exit_code == 0

    serve(scenario)


@pytest.mark.parametrize("flow_control", [False, True], ids=["spdystream-like", "windows"])
def test_exec_stdin_is_piped_in_and_large_output_flows(flow_control: bool) -> None:
    payload = os.urandom(300_000)  # several windows' worth, both ways

    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["cat"], stdin=True, stderr=False)
        outcome = await exec_session(url, stdin=payload, stderr=False, flow_control=flow_control)
        assert outcome.stdout == payload
        assert outcome.exit_code == 0

    serve(scenario)


def test_exec_with_tty_applies_resize() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(
            server, runtime, ["sh", "-c", "read x; stty size"], tty=True, stdin=True, stderr=False
        )
        outcome = await exec_session(url, stdin=b"go\n", tty=True, stderr=False, resize=[(120, 40)])
        assert b"40 120" in outcome.stdout
        assert outcome.exit_code == 0

    serve(scenario)


@pytest.mark.parametrize(
    ("offer", "expected"),
    [
        ("v3.channel.k8s.io", b"command terminated with non-zero exit code: exit status 4"),
        ("v2.channel.k8s.io", b"command terminated with non-zero exit code: exit status 4"),
        ("channel.k8s.io", b"command terminated with non-zero exit code: exit status 4"),
    ],
)
def test_older_protocols_report_a_message(offer: str, expected: bytes) -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["sh", "-c", "exit 4"])
        outcome = await exec_session(url, protocols=[offer])
        assert outcome.protocol == offer
        assert outcome.error == expected

    serve(scenario)


def test_runtime_failure_is_an_internal_error_status() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = server.url(ExecRequest(runtime, "gone", ("true",)))
        outcome = await exec_session(url)
        assert outcome.status["reason"] == "InternalError"
        assert "container gone not found" in outcome.status["message"]

    serve(scenario)


def test_client_disconnect_kills_the_process() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["sleep", "1000"], stderr=False)
        client = await SpdyClient.connect(url)
        await client.open_stream({"streamType": "error"})
        await client.open_stream({"streamType": "stdout"})
        while not runtime.started:
            await asyncio.sleep(0.01)
        await client.close()
        while not runtime.killed:
            await asyncio.sleep(0.01)
        assert runtime.killed == runtime.started
        with pytest.raises(ProcessLookupError):
            os.kill(runtime.killed[0], 0)

    serve(scenario)


def test_fifty_concurrent_execs() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        urls = [
            exec_url(server, runtime, ["sh", "-c", f"echo {i}; exit {i % 7}"]) for i in range(50)
        ]
        outcomes = await asyncio.gather(*(exec_session(url) for url in urls))
        for i, outcome in enumerate(outcomes):
            assert outcome.stdout == f"{i}\n".encode()
            assert outcome.exit_code == i % 7

    serve(scenario)


def test_idle_connection_is_closed() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["sleep", "1000"], stderr=False)
        client = await SpdyClient.connect(url)
        await client.open_stream({"streamType": "error"})
        await client.open_stream({"streamType": "stdout"})
        await client.closed.wait()  # nothing moves: the server hangs up after the timeout
        while not runtime.killed:
            await asyncio.sleep(0.01)
        await client.close()

    serve(scenario, stream_idle_timeout="300ms")


# ----------------------------------------------------------------- tokens and refusals


def test_reused_and_expired_tokens_are_refused() -> None:
    clock = Clock()

    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["true"])
        await exec_session(url)
        with pytest.raises(HandshakeError) as reused:
            await exec_session(url)
        assert reused.value.status == 404
        stale = exec_url(server, runtime, ["true"])
        clock.now += 61
        with pytest.raises(HandshakeError) as expired:
            await exec_session(stale)
        assert expired.value.status == 404
        assert b"expired" in expired.value.body

    serve(scenario, clock)


def test_refusals() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        base = server.base_url
        with pytest.raises(HandshakeError) as unknown:
            await SpdyClient.connect(f"{base}/exec/no-such-token")
        assert unknown.value.status == 404
        with pytest.raises(HandshakeError) as wrong_kind:
            attach = server.url(AttachRequest(runtime, "c1"))
            await SpdyClient.connect(attach.replace("/attach/", "/exec/"))
        assert wrong_kind.value.status == 404
        with pytest.raises(HandshakeError) as mismatch:
            await SpdyClient.connect(exec_url(server, runtime, ["true"]), ["v9.channel.k8s.io"])
        assert mismatch.value.status == 403
        assert "v4.channel.k8s.io" in mismatch.value.headers["x-accepted-stream-protocol-versions"]
        with pytest.raises(HandshakeError) as no_route:
            await SpdyClient.connect(f"{base}/logs/x")
        assert no_route.value.status == 404
        reader, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
        token = exec_url(server, runtime, ["true"]).rsplit("/", 1)[1]
        writer.write(f"GET /exec/{token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (await reader.readline()).startswith(b"HTTP/1.1 400 ")
        writer.close()

    serve(scenario)


def test_at_most_1000_pending_urls() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        for _ in range(1000):
            exec_url(server, runtime, ["true"])
        with pytest.raises(ResourceExhaustedError):
            exec_url(server, runtime, ["true"])

    serve(scenario)


# ----------------------------------------------------------------- attach


def test_attach_streams_the_containers_output_and_detaches() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        await runtime.add_container("c1", ["sh", "-c", "while read l; do echo got $l; done"])
        url = server.url(AttachRequest(runtime, "c1", stdin=True, stderr=False))
        client = await SpdyClient.connect(url)
        await client.open_stream({"streamType": "error"})
        stdin = await client.open_stream({"streamType": "stdin"})
        stdout = await client.open_stream({"streamType": "stdout"})
        await stdin.write(b"one\n")
        assert await stdout.read() == b"got one\n"
        await client.close()
        assert runtime.containers["c1"].returncode is None  # detaching leaves it running

    serve(scenario)


# ----------------------------------------------------------------- port forward


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_port_forward_over_spdy() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        echo, port = await echo_server()
        url = server.url(PortForwardRequest(runtime, "pod1"))
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        assert client.protocol == "portforward.k8s.io"
        for request_id in range(2):
            headers = {"port": str(port), "requestID": str(request_id)}
            error = await client.open_stream({**headers, "streamType": "error"})
            await error.close()
            data = await client.open_stream({**headers, "streamType": "data"})
            await data.write(b"hello %d" % request_id)
            await data.close()
            assert await data.read_all() == b"HELLO %d" % request_id
            assert await error.read_all() == b""
        refused = {"port": "1", "requestID": "9"}
        error = await client.open_stream({**refused, "streamType": "error"})
        data = await client.open_stream({**refused, "streamType": "data"})
        message = await error.read_all()
        assert message.startswith(b"error forwarding port 1 to pod pod1:")
        assert await data.read_all() == b""
        await client.close()
        echo.close()

    serve(scenario)


def test_port_forward_rejects_ports_not_in_the_request() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        echo, port = await echo_server()
        url = server.url(PortForwardRequest(runtime, "pod1", ports=(port + 1,)))
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        headers = {"port": str(port), "requestID": "0"}
        error = await client.open_stream({**headers, "streamType": "error"})
        await client.open_stream({**headers, "streamType": "data"})
        assert b"was not named in the PortForward request" in await error.read_all()
        await client.close()
        echo.close()

    serve(scenario)


# ----------------------------------------------------------------- WebSocket


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://").replace("https://", "wss://")


def ws_exec(url: str, subprotocol: str, stdin: bytes | None) -> dict[int, bytes]:
    """A blocking websocket-client session; returns what arrived per channel."""
    ws = websocket.create_connection(ws_url(url), subprotocols=[subprotocol], timeout=20)
    assert ws.getsubprotocol() == subprotocol
    b64 = "base64" in subprotocol
    if stdin is not None:
        if b64:
            ws.send("0" + base64.b64encode(stdin).decode())
        else:
            ws.send_binary(b"\x00" + stdin)
        if subprotocol.startswith("v5."):
            ws.send_binary(b"\xff\x00")  # close stdin
    received: dict[int, bytes] = {}
    while True:
        opcode, frame = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        if b64:
            channel, data = frame[0] - ord("0"), base64.b64decode(frame[1:])
        else:
            channel, data = frame[0], frame[1:]
        received[channel] = received.get(channel, b"") + data
    ws.close()
    return received


def test_websocket_v5_exec_closes_stdin() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["sh", "-c", "cat; echo oops >&2; exit 2"], stdin=True)
        got = await asyncio.to_thread(ws_exec, url, "v5.channel.k8s.io", b"piped")
        assert got[1] == b"piped" and got[2] == b"oops\n"
        status = json.loads(got[3])
        assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "2"}

    serve(scenario)


def test_websocket_v4_base64_exec() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["sh", "-c", "printf '\\001\\377'"])
        got = await asyncio.to_thread(ws_exec, url, "v4.base64.channel.k8s.io", None)
        assert got[1] == b"\x01\xff"
        assert json.loads(got[3]) == {"status": "Success"}

    serve(scenario)


def test_websocket_v1_binary_reports_failure_as_text() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["sh", "-c", "exit 5"])
        got = await asyncio.to_thread(ws_exec, url, "channel.k8s.io", None)
        assert got[3].endswith(b"exit status 5")

    serve(scenario)


def test_websocket_port_forward() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        echo, port = await echo_server()
        url = server.url(PortForwardRequest(runtime, "pod1")) + f"?port={port}"

        def client() -> tuple[bytes, bytes, bytes]:
            ws = websocket.create_connection(ws_url(url), subprotocols=["v4.channel.k8s.io"])
            first, second = ws.recv(), ws.recv()
            ws.send_binary(b"\x00ping")
            answer = ws.recv()
            ws.close()
            return first, second, answer

        first, second, answer = await asyncio.to_thread(client)
        prefix = port.to_bytes(2, "little")
        assert (first, second) == (b"\x00" + prefix, b"\x01" + prefix)
        assert answer == b"\x00PING"
        echo.close()

    serve(scenario)


def test_websocket_unsupported_subprotocol_is_refused() -> None:
    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        url = exec_url(server, runtime, ["true"])

        def client() -> int:
            try:
                websocket.create_connection(ws_url(url), subprotocols=["v9.channel.k8s.io"])
            except websocket.WebSocketBadStatusException as exc:
                return int(exc.status_code)
            return 101

        assert await asyncio.to_thread(client) == 403

    serve(scenario)


# ----------------------------------------------------------------- TLS


def make_pki(tmp: Path) -> dict[str, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    ca = ["-days", "2", "-subj", "/CN=crio-test-ca", "-keyout", "ca.key", "-out", "ca.crt"]
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", *ca)
    for name in ("server", "client"):
        key = ["-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"]
        run("req", "-newkey", "rsa:2048", "-nodes", *key)
        (tmp / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        sign = ["-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
        run("x509", "-req", *sign, "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return {n: tmp / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    trusted = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    with_cert = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    with_cert.load_cert_chain(pki["client.crt"], pki["client.key"])

    async def scenario(server: StreamServer, runtime: LocalProcessRuntimeForTests) -> None:
        assert server.base_url.startswith("https://127.0.0.1:")
        url = exec_url(server, runtime, ["echo", "secure"])
        outcome = await exec_session(url, ssl_context=with_cert)
        assert outcome.stdout == b"secure\n"
        with pytest.raises((ssl.SSLError, ConnectionError, HandshakeError)):
            await exec_session(exec_url(server, runtime, ["true"]), ssl_context=trusted)

    serve(
        scenario,
        stream_enable_tls=True,
        stream_tls_cert=str(pki["server.crt"]),
        stream_tls_key=str(pki["server.key"]),
        stream_tls_ca=str(pki["ca.crt"]),
    )
