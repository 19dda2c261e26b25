"""The real agent program, run on the host over a socketpair, through the real AgentClient.

No VM and no root: the agent is an ordinary child process here (not PID 1),
so this covers its protocol handling, exec, stdin, terminals, waiting and
killing. Containers need an OCI runtime and root: tests/integration covers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from crio.errors import InvalidRequestError, NotFoundError, WrongStateError
from crio_plugins.runtime_clear import _wire
from crio_plugins.runtime_clear.client import AgentClient, AgentError

AGENT = Path(__file__).resolve().parents[3] / "plugins" / "runtime_clear" / "agent.py"


@contextlib.asynccontextmanager
async def local_agent(tmp_path: Path) -> AsyncIterator[AgentClient]:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", str(AGENT), "--port-fd", str(theirs.fileno()),
         "--state-dir", str(tmp_path)],
        pass_fds=[theirs.fileno()],
    )  # fmt: skip
    theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    client = AgentClient(reader, writer, "local")
    try:
        yield client
    finally:
        await client.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def with_agent(tmp_path: Path, body: Callable[[AgentClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with local_agent(tmp_path) as client:
            await asyncio.wait_for(body(client), 60)

    asyncio.run(main())


async def _collect(client: AgentClient, exec_id: str) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

    def on_event(event: _wire.Event) -> None:
        if event.name == "output":
            out[event.data["stream"]].append(_wire.decode_data(event.data["data"]))

    client.listen(("exec_id", exec_id), on_event)
    return out


def test_ready_comes_first_and_ping_answers(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        ready = await asyncio.wait_for(agent.ready, 30)
        assert ready["version"] == _wire.PROTOCOL_VERSION and ready["kernel"]
        assert (await agent.call("ping"))["version"] == _wire.PROTOCOL_VERSION

    with_agent(tmp_path, body)


def test_exec_streams_both_outputs_and_the_exit_code(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        out = await _collect(agent, "e1")
        started = await agent.call(
            "exec", exec_id="e1", argv=["sh", "-c", "echo out; echo err >&2; exit 3"]
        )
        assert started["pid"] > 0
        done = await agent.call("wait", exec_id="e1")
        assert done["exit_code"] == 3 and done["finished_at"] > 0
        assert b"".join(out["stdout"]) == b"out\n" and b"".join(out["stderr"]) == b"err\n"
        # Waiting again answers at once with the same result.
        assert await agent.call("wait", exec_id="e1") == done

    with_agent(tmp_path, body)


def test_stdin_is_fed_and_closed(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        out = await _collect(agent, "cat")
        await agent.call("exec", exec_id="cat", argv=["cat"], stdin=True)
        payload = bytes(range(256)) * 1024  # more than a pipe holds at once
        await agent.call("stdin", exec_id="cat", data=_wire.encode_data(payload))
        await agent.call("close_stdin", exec_id="cat")
        assert (await agent.call("wait", exec_id="cat"))["exit_code"] == 0
        assert b"".join(out["stdout"]) == payload

    with_agent(tmp_path, body)


def test_a_terminal_exec_sees_a_tty_and_its_size(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        out = await _collect(agent, "t")
        script = "read line; test -t 0 && echo tty; stty size; echo got:$line"
        await agent.call("exec", exec_id="t", argv=["sh", "-c", script], tty=True)
        await agent.call("resize", exec_id="t", width=100, height=40)
        await agent.call("stdin", exec_id="t", data=_wire.encode_data(b"hello\n"))
        assert (await agent.call("wait", exec_id="t"))["exit_code"] == 0
        text = b"".join(out["stdout"]).replace(b"\r\n", b"\n")
        assert b"tty\n40 100\ngot:hello\n" in text and not out["stderr"]

    with_agent(tmp_path, body)


def test_kill_ends_a_process_with_128_plus_the_signal(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        await agent.call("exec", exec_id="s", argv=["sleep", "600"])
        await agent.call("kill", exec_id="s", signal=int(signal.SIGTERM))
        assert (await agent.call("wait", exec_id="s"))["exit_code"] == 128 + signal.SIGTERM

    with_agent(tmp_path, body)


def test_faults_become_crio_errors(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        with pytest.raises(NotFoundError, match="no exec nope"):
            await agent.call("kill", exec_id="nope")
        with pytest.raises(NotFoundError, match="no container c1"):
            await agent.call("state", container_id="c1")
        await agent.call("exec", exec_id="q", argv=["true"])
        with pytest.raises(WrongStateError, match="no open stdin"):
            await agent.call("stdin", exec_id="q", data="")
        with pytest.raises(InvalidRequestError, match="exactly one of"):
            await agent.call("wait")

    with_agent(tmp_path, body)


def test_a_missing_program_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        with pytest.raises(Exception, match="no-such-program"):
            await agent.call("exec", exec_id="m", argv=["/no-such-program"])
        assert (await agent.call("ping"))["version"]

    with_agent(tmp_path, body)


def test_resume_replays_kept_events_and_the_client_drops_what_it_saw(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        seen: list[int] = []
        agent.default_listener = lambda event: seen.append(event.seq)
        await agent.call("exec", exec_id="r", argv=["echo", "hi"])
        await agent.call("wait", exec_id="r")
        assert seen and seen == sorted(seen) and agent.last_seq == seen[-1]
        resumed = await agent.call("resume", after=0)
        assert resumed == {"replayed": len(seen) + 1, "complete": True, "last": seen[-1]}
        assert seen == sorted(set(seen))  # ready and the rest again: dropped as seen
        last = seen[-1]
        agent.last_seq = last - 1  # as if the host had handled one event less
        await agent.call("resume", after=last - 1)
        assert seen.count(last) == 2 and agent.last_seq == last

    with_agent(tmp_path, body)


def test_connections_carry_bytes_both_ways_and_report_refusals(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.read()).upper())  # until the half-close
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(upper, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got: list[bytes] = []
        closed = asyncio.Event()

        def on_event(event: _wire.Event) -> None:
            if event.name == "output":
                got.append(_wire.decode_data(event.data["data"]))
            elif event.name == "closed":
                closed.set()

        agent.listen(("conn_id", "k1"), on_event)
        assert await agent.call("connect", conn_id="k1", port=port) == {"errno": 0}
        await agent.call("send", conn_id="k1", data=_wire.encode_data(b"hello "))
        await agent.call("send", conn_id="k1", data=_wire.encode_data(b"vm"))
        await agent.call("close", conn_id="k1")
        await asyncio.wait_for(closed.wait(), 30)
        assert b"".join(got) == b"HELLO VM"
        server.close()
        await server.wait_closed()
        refused = await agent.call("connect", conn_id="k2", port=port)
        assert refused["errno"] == errno.ECONNREFUSED
        with pytest.raises(NotFoundError, match="no connection k2"):
            await agent.call("send", conn_id="k2", data="")

    with_agent(tmp_path, body)


def test_closing_the_channel_fails_calls_in_flight(tmp_path: Path) -> None:
    async def body(agent: AgentClient) -> None:
        await agent.call("exec", exec_id="w", argv=["sleep", "600"])
        waiting = asyncio.ensure_future(agent.call("wait", exec_id="w"))
        await asyncio.sleep(0)
        await agent.close()
        with pytest.raises(AgentError, match="closed"):
            await waiting

    with_agent(tmp_path, body)
