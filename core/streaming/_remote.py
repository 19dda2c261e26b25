"""Exec and attach sessions over SPDY or WebSocket, handed to the runtime as a StreamIO."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from crio.errors import CrioError
from crio.streaming import remotecommand
from crio.streaming._errors import LocalProtocolError
from crio.streaming._spdy_session import SpdySession, SpdyStream
from crio.streaming._ws_session import WsSession
from crio.streaming.remotecommand import StreamType
from crio.streaming.requests import AttachRequest, ExecRequest

__all__ = ["SessionIO", "serve_spdy_remote", "serve_ws_remote"]

log = logging.getLogger("crio.streaming")

Reader = Callable[[], Awaitable[bytes]]
Writer = Callable[[bytes], Awaitable[None]]

# WebSocket channel numbers.
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)


async def _chunks(read: Reader) -> AsyncIterator[bytes]:
    while chunk := await read():
        yield chunk


async def _sizes(read: Reader) -> AsyncIterator[tuple[int, int]]:
    decoder = remotecommand.ResizeDecoder()
    try:
        while chunk := await read():
            for size in decoder.feed(chunk):
                yield size
    except LocalProtocolError as exc:
        log.info("streaming: ignoring the rest of a bad resize stream: %s", exc)
    except ConnectionError:
        return


async def _discard(data: bytes) -> None:
    return None


@dataclass(slots=True)
class SessionIO:
    """The client's side of a session, as :class:`crio.oci.runtime.StreamIO`."""

    tty: bool
    stdin: AsyncIterator[bytes] | None
    resize: AsyncIterator[tuple[int, int]] | None
    _stdout: Writer
    _stderr: Writer

    async def write_stdout(self, data: bytes) -> None:
        await self._stdout(data)

    async def write_stderr(self, data: bytes) -> None:
        await self._stderr(data)


async def _run(
    request: ExecRequest | AttachRequest, io: SessionIO, gone: asyncio.Event, protocol: str
) -> bytes | None:
    """Run the command or attachment; the error-stream payload, or None if the client left."""
    if isinstance(request, ExecRequest):
        work = request.runtime.exec(request.container_id, request.command, io)
    else:
        work = request.runtime.attach(request.container_id, io)
    task: asyncio.Task[int | None] = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            # The client went away (or we are shutting down): the runtime kills the process.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        return None
    exc = task.exception()
    if exc is not None:
        if not isinstance(exc, CrioError | ConnectionError):
            log.error("streaming: %s in container %s failed: %s: %s", request.kind,
                      request.container_id, type(exc).__name__, exc, exc_info=exc)  # fmt: skip
        what = "executing command in" if request.kind == "exec" else "attaching to"
        return remotecommand.failure_status(
            protocol, f"error {what} container {request.container_id}: {exc}"
        )
    exit_code = task.result()
    if request.kind == "exec" and exit_code:
        return remotecommand.exit_code_status(protocol, int(exit_code))
    return remotecommand.success_status(protocol)


async def _wait_for_streams(
    session: SpdySession, wanted: frozenset[StreamType]
) -> dict[StreamType, SpdyStream] | None:
    streams: dict[StreamType, SpdyStream] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + remotecommand.STREAM_CREATION_TIMEOUT
    while not wanted <= streams.keys():
        try:
            stream = await asyncio.wait_for(session.incoming.get(), deadline - loop.time())
        except TimeoutError:
            log.info("streaming: timed out waiting for the client to create streams")
            return None
        if stream is None:
            return None  # the client left
        raw = stream.header(b"streamtype") or b""
        try:
            kind = StreamType(raw.decode("latin-1"))
        except ValueError:
            kind = None
        if kind is None or kind not in wanted:
            log.info("streaming: unexpected stream type %r", raw)
            continue
        streams[kind] = stream
    return streams


async def serve_spdy_remote(
    session: SpdySession, request: ExecRequest | AttachRequest, protocol: str
) -> None:
    """Wait for the client's streams, run the session, report its status, end it."""
    reading = asyncio.create_task(session.run())
    try:
        wanted = remotecommand.expected_streams(
            protocol,
            stdin=request.stdin,
            stdout=request.stdout,
            stderr=request.stderr,
            tty=request.tty,
        )
        streams = await _wait_for_streams(session, wanted)
        if streams is None:
            return
        stdin, resize = streams.get(StreamType.STDIN), streams.get(StreamType.RESIZE)
        out, err = streams.get(StreamType.STDOUT), streams.get(StreamType.STDERR)
        io = SessionIO(
            tty=request.tty,
            stdin=_chunks(stdin.read) if stdin is not None else None,
            resize=_sizes(resize.read) if resize is not None else None,
            _stdout=out.write if out is not None else _discard,
            _stderr=err.write if err is not None else _discard,
        )
        status = await _run(request, io, session.closed, protocol)
        if status is None:
            return
        with contextlib.suppress(ConnectionError):
            for stream in (out, err):
                if stream is not None:
                    await stream.close()
            if status:
                await streams[StreamType.ERROR].write(status)
            for stream in streams.values():
                await stream.close()
    finally:
        await session.finish()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


def _channel_writer(session: WsSession, channel: int, wanted: bool) -> Writer:
    async def write(data: bytes) -> None:
        if data:
            await session.send(channel, data)

    return write if wanted else _discard


async def serve_ws_remote(
    session: WsSession, request: ExecRequest | AttachRequest, initial: bytes
) -> None:
    """The same over a channel WebSocket: channels instead of streams."""
    protocol = session.conn.subprotocol
    reading = asyncio.create_task(session.run(initial))
    try:
        # An empty message on the lowest writable channel tells the client we are ready.
        first = STDOUT if request.stdout else STDERR if request.stderr else ERROR
        await session.send(first, b"")
        stdin = session.inbound.get(STDIN) if request.stdin else None
        resize = session.inbound.get(RESIZE) if request.tty else None
        io = SessionIO(
            tty=request.tty,
            stdin=_chunks(stdin.read) if stdin is not None else None,
            resize=_sizes(resize.read) if resize is not None else None,
            _stdout=_channel_writer(session, STDOUT, request.stdout),
            _stderr=_channel_writer(session, STDERR, request.stderr and not request.tty),
        )
        status = await _run(request, io, session.closed, protocol or remotecommand.V1)
        if status:
            with contextlib.suppress(ConnectionError):
                await session.send(ERROR, status)
    except ConnectionError:
        pass
    finally:
        await session.finish()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
