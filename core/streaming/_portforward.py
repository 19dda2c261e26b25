"""Port forwarding over SPDY (stream pairs) or WebSocket (channel pairs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable

from crio.errors import CrioError
from crio.streaming._errors import LocalProtocolError
from crio.streaming._spdy_session import SpdySession, SpdyStream
from crio.streaming._ws_session import WsSession
from crio.streaming.remotecommand import PortForwardPairing
from crio.streaming.requests import PortForwardRequest
from crio.streaming.spdy import RstStatus

__all__ = ["serve_spdy_port_forward", "serve_ws_port_forward"]

log = logging.getLogger("crio.streaming")

COPY_CHUNK = 256 * 1024


async def _connect(
    request: PortForwardRequest, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if request.ports and port not in request.ports:
        raise CrioError(f"port {port} was not named in the PortForward request")
    reader, writer = await request.runtime.port_forward(request.pod_sandbox_id, port)
    return reader, writer


def _message(request: PortForwardRequest, port: int, exc: BaseException) -> bytes:
    detail = str(exc)
    if isinstance(exc, OSError) and exc.errno:
        detail = f"connecting to port {port}: {os.strerror(exc.errno)}"
    return f"error forwarding port {port} to pod {request.pod_sandbox_id}: {detail}".encode()


async def _pump_out(reader: asyncio.StreamReader, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Pod to client until the pod side ends."""
    while chunk := await reader.read(COPY_CHUNK):
        await send(chunk)


async def _pump_in(read: Callable[[], Awaitable[bytes]], writer: asyncio.StreamWriter) -> None:
    """Client to pod until the client half-closes; then half-close towards the pod."""
    while chunk := await read():
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _forward_spdy(
    request: PortForwardRequest, port: int, data: SpdyStream, error: SpdyStream
) -> None:
    try:
        reader, writer = await _connect(request, port)
    except (CrioError, OSError) as exc:
        log.info("streaming: port forward to %s:%d failed: %s", request.pod_sandbox_id, port, exc)
        with contextlib.suppress(ConnectionError):
            await error.write(_message(request, port, exc))
            await error.close()
            await data.close()
        return

    async def outbound() -> None:
        await _pump_out(reader, data.write)
        await data.close()

    # The forward ends when the pod's side does (the client's half-close only
    # reaches the pod as EOF); then the error stream closes, as the kubelet does.
    inbound = asyncio.create_task(_pump_in(data.read, writer))
    pod_side = asyncio.create_task(outbound())
    try:
        done, _ = await asyncio.wait({inbound, pod_side}, return_when=asyncio.FIRST_COMPLETED)
        if pod_side not in done and inbound.exception() is None:
            await asyncio.wait({pod_side})  # the client half-closed: deliver the pod's answer
            done = {inbound, pod_side}
        failed = [t for t in done if t.exception() is not None]
        if failed:
            log.debug("streaming: port forward %d ended: %s", port, failed[0].exception())
            data.reset(RstStatus.CANCEL)
    finally:
        for task in (inbound, pod_side):
            task.cancel()
        for task in (inbound, pod_side):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await task
        with contextlib.suppress(ConnectionError):
            await error.close()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def serve_spdy_port_forward(session: SpdySession, request: PortForwardRequest) -> None:
    """Pair the client's streams and forward each pair until the client leaves."""
    reading = asyncio.create_task(session.run())
    pairing = PortForwardPairing()
    pending: dict[int, SpdyStream] = {}
    forwards: set[asyncio.Task[None]] = set()
    try:
        while (stream := await session.incoming.get()) is not None:
            try:
                pair = pairing.add(
                    stream.stream_id,
                    stream.header(b"streamtype"),
                    stream.header(b"port"),
                    stream.header(b"requestid"),
                )
            except LocalProtocolError as exc:
                log.info("streaming: refusing port-forward stream %d: %s", stream.stream_id, exc)
                stream.reset(RstStatus.REFUSED_STREAM)
                continue
            pending[stream.stream_id] = stream
            if pair is None:
                continue
            data, error = pending.pop(pair.data_stream), pending.pop(pair.error_stream)
            task = asyncio.create_task(_forward_spdy(request, pair.port, data, error))
            forwards.add(task)
            task.add_done_callback(forwards.discard)
    finally:
        for task in list(forwards):
            task.cancel()
        for task in list(forwards):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await session.finish()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


def ws_ports(request: PortForwardRequest, query_ports: list[str]) -> list[int] | str:
    """The ports of a WebSocket port forward: the query's ``port`` values, else the request's."""
    if not query_ports:
        if not request.ports:
            return 'query parameter "port" is required'
        return list(request.ports)
    ports = []
    for text in query_ports:
        if not text.isdigit() or not 0 < int(text) <= 0xFFFF:
            return f"port {text!r} is not a TCP port number (1-65535)"
        ports.append(int(text))
    return ports


async def _forward_ws(
    session: WsSession, request: PortForwardRequest, index: int, port: int
) -> None:
    data_channel, error_channel = 2 * index, 2 * index + 1
    try:
        reader, writer = await _connect(request, port)
    except (CrioError, OSError) as exc:
        with contextlib.suppress(ConnectionError):
            await session.send(error_channel, _message(request, port, exc))
        return
    inbound = asyncio.create_task(_pump_in(session.inbound[data_channel].read, writer))
    try:
        await _pump_out(reader, lambda chunk: session.send(data_channel, chunk))
    except (ConnectionError, OSError) as exc:
        log.debug("streaming: websocket port forward %d ended: %s", port, exc)
    finally:
        inbound.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await inbound
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def serve_ws_port_forward(
    session: WsSession, request: PortForwardRequest, ports: list[int], initial: bytes
) -> None:
    """One connection per port; each channel pair starts with the port, little-endian."""
    reading = asyncio.create_task(session.run(initial))
    try:
        for index, port in enumerate(ports):
            prefix = struct.pack("<H", port)
            await session.send(2 * index, prefix)
            await session.send(2 * index + 1, prefix)
        forwards = [_forward_ws(session, request, i, port) for i, port in enumerate(ports)]
        await asyncio.gather(*forwards)
    except ConnectionError:
        pass
    finally:
        await session.finish()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
