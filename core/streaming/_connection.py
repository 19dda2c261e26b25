"""One streaming connection: the HTTP request head, its token, then SPDY or WebSocket.

Imported by :class:`crio.streaming.server.StreamServer` with its first
connection, so that a node nobody execs into never loads h11, wsproto and
the SPDY code.
"""

from __future__ import annotations

import asyncio
import logging

import h11

from crio.errors import NotFoundError
from crio.streaming import handshake, remotecommand, websocket
from crio.streaming._portforward import serve_spdy_port_forward, serve_ws_port_forward, ws_ports
from crio.streaming._remote import RESIZE, STDIN, serve_spdy_remote, serve_ws_remote
from crio.streaming._spdy_session import SpdySession
from crio.streaming._ws_session import WsSession
from crio.streaming.handshake import Refusal
from crio.streaming.requests import PortForwardRequest, StreamRequest
from crio.streaming.tokens import TokenCache, TokenExpiredError

__all__ = ["MAX_REQUEST_HEAD", "REQUEST_TIMEOUT", "serve_connection"]

log = logging.getLogger("crio.streaming")

#: How long a client may take to send its request head.
REQUEST_TIMEOUT = 30.0
MAX_REQUEST_HEAD = 16 * 1024


async def _read_request(reader: asyncio.StreamReader, conn: h11.Connection) -> h11.Request | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REQUEST_TIMEOUT
    request: h11.Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(65536), deadline - loop.time())
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data) and event.data:
            return None  # streaming requests carry no body
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tokens: TokenCache[StreamRequest],
    idle_timeout: float,
) -> None:
    """Serve one connection: its request head, the token check, then the upgraded session."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        request = await _read_request(reader, conn)
    except (h11.RemoteProtocolError, TimeoutError) as exc:
        log.info("streaming: bad request: %s", exc)
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            _refuse(writer, conn, Refusal(400, f"bad request: {exc}"))
        return
    if request is None:
        return
    route = handshake.parse_route(request)
    if isinstance(route, Refusal):
        return _refuse(writer, conn, route)
    try:
        stream_request = tokens.consume(route.token)
    except (NotFoundError, TokenExpiredError) as exc:
        return _refuse(writer, conn, Refusal(404, str(exc)))
    if stream_request.kind != route.kind:
        return _refuse(writer, conn, Refusal(404, f"token is not for {route.kind}"))
    kind = handshake.upgrade_kind(request)
    if isinstance(kind, Refusal):
        return _refuse(writer, conn, kind)
    leftover = conn.trailing_data[0]
    if kind == "spdy":
        await _serve_spdy(reader, writer, conn, request, stream_request, leftover, idle_timeout)
    else:
        await _serve_ws(reader, writer, request, route, stream_request, leftover, idle_timeout)


def _refuse(writer: asyncio.StreamWriter, conn: h11.Connection, refusal: Refusal) -> None:
    log.info("streaming: answering %d: %s", refusal.status, refusal.message)
    for event in handshake.refusal_events(refusal):
        data = conn.send(event)
        if data:
            writer.write(data)


async def _serve_spdy(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    conn: h11.Connection,
    request: h11.Request,
    stream_request: StreamRequest,
    leftover: bytes,
    idle_timeout: float,
) -> None:
    if isinstance(stream_request, PortForwardRequest):
        supported, fallback = remotecommand.SPDY_PORT_FORWARD_PROTOCOLS, ""
    else:
        supported, fallback = remotecommand.SPDY_EXEC_PROTOCOLS, remotecommand.V1
    protocol = handshake.negotiate(request, supported, fallback)
    if isinstance(protocol, Refusal):
        return _refuse(writer, conn, protocol)
    writer.write(conn.send(handshake.spdy_switch(protocol)) or b"")
    session = SpdySession(reader, writer, idle_timeout, initial=leftover)
    if isinstance(stream_request, PortForwardRequest):
        await serve_spdy_port_forward(session, stream_request)
    else:
        await serve_spdy_remote(session, stream_request, protocol)


async def _serve_ws(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: h11.Request,
    route: handshake.Route,
    stream_request: StreamRequest,
    leftover: bytes,
    idle_timeout: float,
) -> None:
    conn = websocket.ChannelConnection(request)
    opening = conn.next_event()
    if not isinstance(opening, websocket.Opening):  # pragma: no cover - wsproto's contract
        return
    forward = isinstance(stream_request, PortForwardRequest)
    supported = websocket.PORT_FORWARD_SUBPROTOCOLS if forward else websocket.EXEC_SUBPROTOCOLS
    chosen = websocket.choose_subprotocol(opening.subprotocols, supported)
    if chosen is None:
        message = f"requested protocol(s) are not supported: {list(opening.subprotocols)}"
        writer.write(conn.reject(403, message))
        return
    ports: list[int] = []
    if isinstance(stream_request, PortForwardRequest):
        found = ws_ports(stream_request, route.query_values("port"))
        if isinstance(found, str):
            writer.write(conn.reject(400, found))
            return
        ports = found
    writer.write(conn.accept(chosen))
    if isinstance(stream_request, PortForwardRequest):
        readable = {2 * i for i in range(len(ports))}
        session = WsSession(reader, writer, conn, readable, idle_timeout)
        await serve_ws_port_forward(session, stream_request, ports, leftover)
    else:
        session = WsSession(reader, writer, conn, {STDIN, RESIZE}, idle_timeout)
        await serve_ws_remote(session, stream_request, leftover)
