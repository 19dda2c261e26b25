"""The runc-side streaming code against real containers, through the real server.

A container started here directly with runc (or under conmon, for attach)
is served by StreamServer through RuncStreamingForTests, which only routes
the Runtime's three streaming calls to plugins/runtime_runc's exec_session,
attach and portforward modules: nothing is simulated. The clients are the
spec-written SPDY client and websocket-client.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import websocket
from runc_containers import Container, Containers

from crio.config import ApiConfig
from crio.oci.runtime import StreamIO
from crio.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from crio.streaming.server import StreamServer
from crio_plugins.runtime_runc.attach import attach_to_conmon
from crio_plugins.runtime_runc.exec_session import exec_in_container
from crio_plugins.runtime_runc.portforward import connect_in_netns
from support.spdy_client import SpdyClient, exec_session


class RuncStreamingForTests:
    """Routes exec/attach/port_forward of one container to the runtime_runc modules."""

    def __init__(self, container: Container) -> None:
        self.container = container

    async def exec(self, container_id: str, command: Sequence[str], io: StreamIO) -> int:
        c = self.container
        return await exec_in_container(
            c.runtime_path, c.runtime_root, container_id, command, io, process=c.process
        )

    async def attach(self, container_id: str, io: StreamIO) -> None:
        c = self.container
        assert c.attach_socket is not None and c.ctl_fifo is not None
        await attach_to_conmon(c.attach_socket, c.ctl_fifo, io, stdin=True)

    async def port_forward(self, pod_sandbox_id: str, port: int) -> tuple[Any, Any]:
        return await connect_in_netns(self.container.netns, port)


Scenario = Callable[[StreamServer, RuncStreamingForTests], Awaitable[None]]


def serve(container: Container, scenario: Scenario) -> None:
    async def main() -> None:
        server = StreamServer(ApiConfig(stream_address="127.0.0.1", stream_port=0))
        await server.start()
        try:
            await asyncio.wait_for(scenario(server, RuncStreamingForTests(container)), 120)
        finally:
            await server.close()

    asyncio.run(main())


def exec_url(
    server: StreamServer, runtime: RuncStreamingForTests, cmd: list[str], **kw: Any
) -> str:
    return server.url(ExecRequest(runtime, runtime.container.container_id, tuple(cmd), **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_exec_without_tty(containers: Containers, runtime: str) -> None:
    container = containers.run(["sleep", "1000"], runtime=runtime)

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        url = exec_url(server, rt, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        outcome = await exec_session(url)
        assert (outcome.stdout, outcome.stderr) == (b"out\n", b"err\n")
        assert outcome.status["reason"] == "NonZeroExitCode"
        assert outcome.exit_code == 3

    serve(container, scenario)


def test_exec_stdin_is_piped_in(containers: Containers) -> None:
    container = containers.run(["sleep", "1000"])
    payload = os.urandom(200_000)

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        url = exec_url(server, rt, ["cat"], stdin=True, stderr=False)
        outcome = await exec_session(url, stdin=payload, stderr=False)
        assert outcome.stdout == payload
        assert outcome.exit_code == 0

    serve(container, scenario)


async def _read_until(stream: Any, wanted: bytes) -> bytes:
    seen = b""
    while wanted not in seen:
        chunk = await stream.read()
        assert chunk, f"stream ended before {wanted!r}; got {seen!r}"
        seen += chunk
    return seen


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_exec_with_tty_and_resize(containers: Containers, runtime: str) -> None:
    container = containers.run(["sleep", "1000"], runtime=runtime)

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        url = exec_url(
            server,
            rt,
            ["sh", "-c", "while read x; do stty size; done"],
            tty=True,
            stdin=True,
            stderr=False,
        )
        client = await SpdyClient.connect(url)
        error = await client.open_stream({"streamType": "error"})
        stdin = await client.open_stream({"streamType": "stdin"})
        stdout = await client.open_stream({"streamType": "stdout"})
        resize = await client.open_stream({"streamType": "resize"})
        await resize.write(b'{"Width":120,"Height":40}\n')
        seen = b""
        # The runtime applies a resize asynchronously (SIGWINCH): ask until it shows.
        for _ in range(50):
            await stdin.write(b"\n")
            seen = await _next_answer(stdout, seen)
            if b"40 120" in seen:
                break
        assert b"40 120" in seen
        await stdin.write(b"\x04")  # EOT ends `read`
        assert await error.read_all() == b'{"status": "Success"}'
        await client.close()

    serve(container, scenario)


def test_client_disconnect_kills_the_exec(containers: Containers) -> None:
    container = containers.run(["sleep", "1000"])
    before = container.pids()

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        url = exec_url(server, rt, ["sh", "-c", "echo started; exec sleep 1000"], stderr=False)
        client = await SpdyClient.connect(url)
        await client.open_stream({"streamType": "error"})
        stdout = await client.open_stream({"streamType": "stdout"})
        await _read_until(stdout, b"started")
        assert len(container.pids()) == len(before) + 1
        await client.close()
        while len(await asyncio.to_thread(container.pids)) != len(before):
            await asyncio.sleep(0.05)

    serve(container, scenario)
    assert container.pids() == before


def test_fifty_concurrent_execs(containers: Containers) -> None:
    container = containers.run(["sleep", "1000"])

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        urls = [exec_url(server, rt, ["sh", "-c", f"echo {i}; exit {i % 5}"]) for i in range(50)]
        outcomes = await asyncio.gather(*(exec_session(url) for url in urls))
        assert [o.stdout for o in outcomes] == [f"{i}\n".encode() for i in range(50)]
        assert [o.exit_code for o in outcomes] == [i % 5 for i in range(50)]

    serve(container, scenario)
    assert len(container.pids()) == 1  # nothing left behind


def test_websocket_exec_in_a_container(containers: Containers) -> None:
    container = containers.run(["sleep", "1000"])

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        url = exec_url(server, rt, ["sh", "-c", "cat; exit 6"], stdin=True).replace("http", "ws", 1)

        def client() -> dict[int, bytes]:
            ws = websocket.create_connection(url, subprotocols=["v5.channel.k8s.io"], timeout=30)
            ws.send_binary(b"\x00via websocket")
            ws.send_binary(b"\xff\x00")
            got: dict[int, bytes] = {}
            while True:
                opcode, frame = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return got
                got[frame[0]] = got.get(frame[0], b"") + frame[1:]

        got = await asyncio.to_thread(client)
        assert got[1] == b"via websocket"
        assert b'"message": "6"' in got[3]

    serve(container, scenario)


def test_port_forward_into_the_pod_network(containers: Containers) -> None:
    container = containers.run(["nc", "-ll", "-p", "8080", "-e", "/bin/cat"])

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        url = server.url(PortForwardRequest(rt, "pod"))  # type: ignore[arg-type]
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        payload = os.urandom(500_000)
        for request_id in range(2):
            headers = {"port": "8080", "requestID": str(request_id)}
            error = await client.open_stream({**headers, "streamType": "error"})
            await error.close()
            data = await client.open_stream({**headers, "streamType": "data"})
            reader = asyncio.create_task(_read_exactly(data, len(payload)))
            await data.write(payload)
            assert await reader == payload
            await data.close()
        await client.close()

    # The listener may take a moment to start inside the container.
    _wait_for_listener(container, 8080)
    serve(container, scenario)


async def _read_exactly(stream: Any, size: int) -> bytes:
    got = b""
    while len(got) < size:
        chunk = await stream.read()
        assert chunk, f"stream ended after {len(got)} of {size} bytes"
        got += chunk
    return got


def _wait_for_listener(container: Container, port: int) -> None:
    async def probe() -> None:
        for _ in range(200):
            try:
                _, writer = await connect_in_netns(container.netns, port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return
        raise AssertionError(f"nothing listens on {port} in {container.netns}")

    asyncio.run(probe())


def test_port_forward_for_a_host_network_pod(containers: Containers) -> None:
    container = containers.run(["sleep", "1000"], host_network=True)

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"host says hi")
            writer.close()

        listener = await asyncio.start_server(hello, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        url = server.url(PortForwardRequest(rt, "pod"))  # type: ignore[arg-type]
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        headers = {"port": str(port), "requestID": "0"}
        error = await client.open_stream({**headers, "streamType": "error"})
        data = await client.open_stream({**headers, "streamType": "data"})
        assert await data.read_all() == b"host says hi"
        assert await error.read_all() == b""
        await client.close()
        listener.close()

    serve(container, scenario)


def test_port_forward_error_names_the_port(containers: Containers) -> None:
    container = containers.run(["sleep", "1000"])

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        url = server.url(PortForwardRequest(rt, "pod-x"))  # type: ignore[arg-type]
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        headers = {"port": "9", "requestID": "0"}
        error = await client.open_stream({**headers, "streamType": "error"})
        await client.open_stream({**headers, "streamType": "data"})
        message = await error.read_all()
        assert message.startswith(b"error forwarding port 9 to pod pod-x:")
        assert b"refused" in message.lower()
        await client.close()

    serve(container, scenario)


def test_attach_through_conmon(containers: Containers) -> None:
    container = containers.run_under_conmon(
        ["sh", "-c", "while read l; do echo got $l; echo err $l >&2; done"], stdin=True, tty=False
    )

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        url = server.url(AttachRequest(rt, container.container_id, stdin=True))  # type: ignore[arg-type]
        client = await SpdyClient.connect(url)
        await client.open_stream({"streamType": "error"})
        stdin = await client.open_stream({"streamType": "stdin"})
        stdout = await client.open_stream({"streamType": "stdout"})
        stderr = await client.open_stream({"streamType": "stderr"})
        await stdin.write(b"one\n")
        assert await _read_until(stdout, b"got one\n") == b"got one\n"
        assert await _read_until(stderr, b"err one\n") == b"err one\n"
        await client.close()  # detach

    serve(container, scenario)
    assert len(container.pids()) == 1, "detaching must leave the container running"


def test_attach_with_tty_and_resize(containers: Containers) -> None:
    container = containers.run_under_conmon(
        ["sh", "-c", "while read x; do stty size; done"], stdin=True, tty=True
    )

    async def scenario(server: StreamServer, rt: RuncStreamingForTests) -> None:
        request = AttachRequest(rt, container.container_id, tty=True, stdin=True, stderr=False)  # type: ignore[arg-type]
        client = await SpdyClient.connect(server.url(request))
        await client.open_stream({"streamType": "error"})
        stdin = await client.open_stream({"streamType": "stdin"})
        stdout = await client.open_stream({"streamType": "stdout"})
        resize = await client.open_stream({"streamType": "resize"})
        await resize.write(b'{"Width":100,"Height":30}\n')
        seen = b""
        for _ in range(50):  # conmon resizes asynchronously: ask until it shows
            await stdin.write(b"\n")
            seen = await _next_answer(stdout, seen)
            if b"30 100" in seen:
                break
        assert b"30 100" in seen
        await client.close()

    serve(container, scenario)


async def _next_answer(stdout: Any, seen: bytes) -> bytes:
    """Read until one more `stty size` answer (a size, or its complaint about 0x0) arrives."""
    answers = len(re.findall(rb"(\d+ \d+|stty: [^\r]*)\r\n", seen))
    while len(re.findall(rb"(\d+ \d+|stty: [^\r]*)\r\n", seen)) == answers:
        chunk = await stdout.read()
        assert chunk, f"output ended: {seen!r}"
        seen += chunk
    return seen
