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
from typing import TYPE_CHECKING

from crio.config import parse_duration
from crio.errors import ConfigError
from crio.streaming.tokens import TokenCache

if TYPE_CHECKING:
    from crio.config import ApiConfig
    from crio.streaming.requests import StreamRequest

__all__ = ["StreamServer"]

log = logging.getLogger("crio.streaming")


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
            # The HTTP, SPDY and WebSocket code loads with the first connection.
            from crio.streaming._connection import serve_connection

            await serve_connection(reader, writer, self._tokens, self.idle_timeout)
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


def _url_host(host: str) -> str:
    """The host part of our URLs: a wildcard bind is reached through loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)
