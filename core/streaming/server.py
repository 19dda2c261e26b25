"""The streaming HTTP server: one token-guarded upgrade per connection.

``[crio.api] stream_address``/``stream_port`` (0: a free port), optional TLS
(``stream_enable_tls`` with cert and key; with ``stream_tls_ca`` clients
must present a certificate), ``stream_idle_timeout``. Each connection
carries one request: ``/{exec,attach,portforward}/TOKEN``, upgraded to
SPDY/3.1 or WebSocket. A token is good once, for a minute: reused or
unknown or expired answers 404, as the kubelet's own streaming
server does (its token cache forgets an expired token).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable

import h11

from crio.config import ApiConfig, parse_duration
from crio.errors import ConfigError, NotFoundError
from crio.streaming import handshake, remotecommand, websocket
from crio.streaming._portforward import serve_spdy_port_forward, serve_ws_port_forward, ws_ports
from crio.streaming._remote import RESIZE, STDIN, serve_spdy_remote, serve_ws_remote
from crio.streaming._spdy_session import SpdySession
from crio.streaming._ws_session import WsSession
from crio.streaming.handshake import Refusal
from crio.streaming.requests import PortForwardRequest, StreamRequest
from crio.streaming.tokens import TokenCache, TokenExpiredError

__all__ = ["StreamServer"]

log = logging.getLogger("crio.streaming")

#: How long a client may take to send its request head.
REQUEST_TIMEOUT = 30.0
MAX_REQUEST_HEAD = 16 * 1024


class StreamServer:
    """Serves the URLs that Exec, Attach and PortForward hand out."""

    def __init__(self, api: ApiConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._tokens: TokenCache[StreamRequest] = TokenCache(clock)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.idle_timeout = parse_duration(api.stream_idle_timeout)
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    def _ssl_context(self) -> ssl.SSLContext | None:
        api = self._api
        if not api.stream_enable_tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(api.stream_tls_cert, api.stream_tls_key)
            if api.stream_tls_ca:
                context.load_verify_locations(api.stream_tls_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the streaming TLS files: {exc}", key="crio.api"
            ) from exc
        return context

    async def start(self) -> None:
        """Bind and listen; afterwards :attr:`base_url` names the server."""
        context = self._ssl_context()
        host = self._api.stream_address or "0.0.0.0"
        try:
            self._server = await asyncio.start_server(
                self._accept, host, self._api.stream_port, ssl=context, limit=256 * 1024
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{self._api.stream_port}: {exc}",
                key="crio.api.stream_address",
            ) from exc
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"{'https' if context else 'http'}://{_url_host(host)}:{port}"
        log.info("streaming server listening on %s", self.base_url)

    async def close(self) -> None:
        """Stop listening and end every session (their processes are killed)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ tokens

    def url(self, request: StreamRequest) -> str:
        """A single-use URL for ``request``.

        :raises ResourceExhaustedError: 1000 requests are already waiting.
        """
        if not self.base_url:
            raise RuntimeError("the streaming server is not started")
        return f"{self.base_url}/{request.kind}/{self._tokens.insert(request)}"

    def pending(self) -> int:
        return len(self._tokens)

    # ------------------------------------------------------------------ connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("streaming: connection ended: %s", exc)
        except Exception as exc:
            peer = writer.get_extra_info("peername")
            log.exception("streaming: connection from %s failed: %s: %s",
                          peer, type(exc).__name__, exc)  # fmt: skip
        finally:
            self._connections.discard(task)
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _read_request(
        self, reader: asyncio.StreamReader, conn: h11.Connection
    ) -> h11.Request | None:
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        try:
            request = await self._read_request(reader, conn)
        except (h11.RemoteProtocolError, TimeoutError) as exc:
            log.info("streaming: bad request: %s", exc)
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self._refuse(writer, conn, Refusal(400, f"bad request: {exc}"))
            return
        if request is None:
            return
        route = handshake.parse_route(request)
        if isinstance(route, Refusal):
            return self._refuse(writer, conn, route)
        try:
            stream_request = self._tokens.consume(route.token)
        except (NotFoundError, TokenExpiredError) as exc:
            return self._refuse(writer, conn, Refusal(404, str(exc)))
        if stream_request.kind != route.kind:
            return self._refuse(writer, conn, Refusal(404, f"token is not for {route.kind}"))
        kind = handshake.upgrade_kind(request)
        if isinstance(kind, Refusal):
            return self._refuse(writer, conn, kind)
        leftover = conn.trailing_data[0]
        if kind == "spdy":
            await self._serve_spdy(reader, writer, conn, request, stream_request, leftover)
        else:
            await self._serve_ws(reader, writer, request, route, stream_request, leftover)

    def _refuse(self, writer: asyncio.StreamWriter, conn: h11.Connection, refusal: Refusal) -> None:
        log.info("streaming: answering %d: %s", refusal.status, refusal.message)
        for event in handshake.refusal_events(refusal):
            data = conn.send(event)
            if data:
                writer.write(data)

    async def _serve_spdy(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: h11.Connection,
        request: h11.Request,
        stream_request: StreamRequest,
        leftover: bytes,
    ) -> None:
        if isinstance(stream_request, PortForwardRequest):
            supported, fallback = remotecommand.SPDY_PORT_FORWARD_PROTOCOLS, ""
        else:
            supported, fallback = remotecommand.SPDY_EXEC_PROTOCOLS, remotecommand.V1
        protocol = handshake.negotiate(request, supported, fallback)
        if isinstance(protocol, Refusal):
            return self._refuse(writer, conn, protocol)
        writer.write(conn.send(handshake.spdy_switch(protocol)) or b"")
        session = SpdySession(reader, writer, self.idle_timeout, initial=leftover)
        if isinstance(stream_request, PortForwardRequest):
            await serve_spdy_port_forward(session, stream_request)
        else:
            await serve_spdy_remote(session, stream_request, protocol)

    async def _serve_ws(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        route: handshake.Route,
        stream_request: StreamRequest,
        leftover: bytes,
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
            session = WsSession(reader, writer, conn, readable, self.idle_timeout)
            await serve_ws_port_forward(session, stream_request, ports, leftover)
        else:
            session = WsSession(reader, writer, conn, {STDIN, RESIZE}, self.idle_timeout)
            await serve_ws_remote(session, stream_request, leftover)


def _url_host(host: str) -> str:
    """The host part of our URLs: a wildcard bind is reached through loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)
