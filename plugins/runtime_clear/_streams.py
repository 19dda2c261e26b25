"""Exec and attach sessions of a pod VM's containers, bridged to the agent.

The streaming server hands over a :class:`crio.oci.runtime.StreamIO`; the
agent speaks ``stdin``/``close_stdin``/``resize`` requests and ``output``
events. Output is queued as the events arrive (in order) and written to the
client by one task, so a slow client never stalls the agent channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from crio.errors import CrioError
from crio.oci.runtime import StreamIO
from crio_plugins.runtime_clear import _wire
from crio_plugins.runtime_clear.vm import VM

__all__ = ["STDIN_CHUNK", "attach_session", "exec_session", "open_port"]

#: Stdin is sent in pieces of at most this many bytes (one agent line each).
STDIN_CHUNK = 256 * 1024

Output = tuple[str, bytes] | None


async def _write_out(queue: asyncio.Queue[Output], io: StreamIO) -> None:
    while (item := await queue.get()) is not None:
        stream, data = item
        if stream == "stderr" and not io.tty:
            await io.write_stderr(data)
        else:
            await io.write_stdout(data)


async def _feed_stdin(
    vm: VM, target: dict[str, str], stdin: AsyncIterator[bytes], close: bool
) -> None:
    async for data in stdin:
        for start in range(0, len(data), STDIN_CHUNK):
            chunk = _wire.encode_data(data[start : start + STDIN_CHUNK])
            await vm.call("stdin", **target, data=chunk)
    if close:
        await vm.call("close_stdin", **target)


async def _resize(vm: VM, target: dict[str, str], sizes: AsyncIterator[tuple[int, int]]) -> None:
    async for width, height in sizes:
        with contextlib.suppress(CrioError):
            await vm.call("resize", **target, width=int(width), height=int(height))


def _queue_output(queue: asyncio.Queue[Output]) -> Callable[[_wire.Event], None]:
    def on_event(event: _wire.Event) -> None:
        if event.name == "output":
            queue.put_nowait((event.data["stream"], _wire.decode_data(event.data["data"])))

    return on_event


async def exec_session(vm: VM, container_id: str, command: list[str], io: StreamIO) -> int:
    """Run ``command`` in the container attached to ``io``; its exit code.

    The process is killed when the client goes away (stdin fails, or this
    coroutine is cancelled).
    """
    agent = vm.agent
    assert agent is not None
    exec_id = secrets.token_hex(8)
    target = {"exec_id": exec_id}
    queue: asyncio.Queue[Output] = asyncio.Queue()
    agent.listen(("exec_id", exec_id), _queue_output(queue))
    helpers: list[asyncio.Task[Any]] = []
    started = False
    try:
        args: dict[str, Any] = {"tty": io.tty, "stdin": io.stdin is not None}
        await vm.call("exec", exec_id=exec_id, container_id=container_id, argv=command, **args)
        started = True
        writer = asyncio.create_task(_write_out(queue, io))
        helpers.append(writer)
        if io.stdin is not None:
            helpers.append(asyncio.create_task(_feed_stdin(vm, target, io.stdin, close=True)))
        if io.resize is not None and io.tty:
            helpers.append(asyncio.create_task(_resize(vm, target, io.resize)))
        waiter = asyncio.create_task(vm.call("wait", **target))
        while True:
            pending = {waiter, *(t for t in helpers[1:] if not t.done())}
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if t is not waiter and t.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            if waiter in done:
                break
        result = waiter.result()
        queue.put_nowait(None)  # every output event came before the wait's reply
        await writer
        return int(result["exit_code"])
    except BaseException:
        if started:
            with contextlib.suppress(CrioError):
                await asyncio.shield(vm.call("kill", **target, signal=int(signal.SIGKILL)))
        raise
    finally:
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(BaseException):
                await task
        agent.unlisten(("exec_id", exec_id))


async def attach_session(
    vm: VM,
    container_id: str,
    io: StreamIO,
    subscribe: Callable[[Callable[[str, bytes], None]], Callable[[], None]],
    exited: asyncio.Event,
    stdin_once: bool,
) -> None:
    """Connect ``io`` to the container's stdio until it exits or the client leaves.

    :param subscribe: registers a sink for the container's output; returns
        the function that unregisters it.
    """
    target = {"container_id": container_id}
    queue: asyncio.Queue[Output] = asyncio.Queue()
    unsubscribe = subscribe(lambda stream, data: queue.put_nowait((stream, data)))
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(_write_out(queue, io))]
    try:
        if io.stdin is not None:
            tasks.append(asyncio.create_task(_feed_stdin(vm, target, io.stdin, close=stdin_once)))
        if io.resize is not None and io.tty:
            tasks.append(asyncio.create_task(_resize(vm, target, io.resize)))
        ended = asyncio.create_task(exited.wait())
        tasks.append(ended)
        while True:
            done, _ = await asyncio.wait(
                [t for t in tasks if not t.done()] or [ended],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                if task is not ended and task is not tasks[0] and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if ended.done() or tasks[0].done():
                break
        queue.put_nowait(None)
        await tasks[0]
    finally:
        unsubscribe()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def open_port(
    vm: VM, port: int, tasks: set[asyncio.Task[None]]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream pair connected to ``port`` on the guest's loopback, through the agent.

    One end of a socketpair goes to the caller; a task (kept in ``tasks``)
    carries bytes between the other end and the agent's connection.

    :raises OSError: nothing listens there (the guest's errno).
    """
    conn_id = secrets.token_hex(8)
    target = {"conn_id": conn_id}
    result = await vm.call("connect", **target, port=int(port))
    if result.get("errno"):
        raise OSError(int(result["errno"]), str(result.get("message", "")))
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    theirs_reader, theirs_writer = await asyncio.open_unix_connection(sock=theirs)
    peer_done = asyncio.Event()

    def on_event(event: _wire.Event) -> None:
        if event.name == "output":
            with contextlib.suppress(ConnectionError, RuntimeError):
                theirs_writer.write(_wire.decode_data(event.data["data"]))
        elif event.name == "closed":
            with contextlib.suppress(ConnectionError, RuntimeError, OSError):
                theirs_writer.write_eof()
            peer_done.set()

    assert vm.agent is not None
    vm.agent.listen(("conn_id", conn_id), on_event)

    async def pump() -> None:
        aborted = False
        try:
            while chunk := await theirs_reader.read(STDIN_CHUNK):
                await vm.call("send", **target, data=_wire.encode_data(chunk))
            await vm.call("close", **target)
            await peer_done.wait()
        except (CrioError, ConnectionError):
            aborted = True
        finally:
            if aborted or not peer_done.is_set():
                with contextlib.suppress(CrioError):
                    await vm.call("close", **target, abort=True)
            vm.agent.unlisten(("conn_id", conn_id))  # type: ignore[union-attr]
            theirs_writer.close()

    task = asyncio.create_task(pump(), name=f"port-{port}-{conn_id}")
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return reader, writer
