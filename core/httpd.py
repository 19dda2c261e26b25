"""A small HTTP/1.1 server for GET endpoints (metrics, inspection), on TCP or a unix socket.

h11 parses and frames; this module only moves bytes. One request per
connection (answered with ``Connection: close``): scrapers and ``crio
status`` make one request each, and nothing here has to track idle
keep-alive connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from crio.errors import ConfigError

__all__ = ["HttpServer", "Response"]

log = logging.getLogger("crio.httpd")

#: How long a client may take to send its request head.
REQUEST_TIMEOUT = 10.0
MAX_REQUEST_HEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


#: ``handler(path)`` for a GET of ``path`` (the query string is cut off).
Handler = Callable[[str], Awaitable[Response]]


class HttpServer:
    """Serves ``handler`` on listeners added with :meth:`listen_tcp` and :meth:`listen_unix`."""

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self._handler = handler
        self._servers: list[asyncio.Server] = []
        self._unix_paths: list[Path] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen_tcp(self, host: str, port: int, key: str) -> tuple[str, int]:
        """Listen on ``host:port``; returns the address bound (port 0 picks one).

        :raises ConfigError: naming ``key`` when the address cannot be bound.
        """
        try:
            server = await asyncio.start_server(self._serve, host, port)
        except OSError as exc:
            raise ConfigError(
                f"{self.name}: cannot listen on {host}:{port}: {exc}", key=key
            ) from exc
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def listen_unix(self, path: Path, key: str, mode: int = 0o660) -> None:
        """Listen on the unix socket ``path`` (a stale socket file is replaced).

        :raises ConfigError: naming ``key`` when the path cannot be used.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_socket():
                path.unlink()
            old = os.umask(0o777 & ~mode)
            try:
                server = await asyncio.start_unix_server(self._serve, str(path))
            finally:
                os.umask(old)
        except OSError as exc:
            raise ConfigError(f"{self.name}: cannot listen on {path}: {exc}", key=key) from exc
        self._servers.append(server)
        self._unix_paths.append(path)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        import h11  # the first request pays for it, not the daemon's start

        try:
            await self._one(reader, writer)
        except (ConnectionError, TimeoutError, h11.RemoteProtocolError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("%s: a request failed", self.name)
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import h11

        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        async with asyncio.timeout(REQUEST_TIMEOUT):
            event = conn.next_event()
            while event is h11.NEED_DATA:
                conn.receive_data(await reader.read(4096))
                event = conn.next_event()
        if not isinstance(event, h11.Request):
            return
        method = event.method.decode("ascii", "replace")
        path = event.target.decode("utf-8", "replace").partition("?")[0]
        if method not in ("GET", "HEAD"):
            response = Response(405, b"only GET is served here\n")
        else:
            response = await self._handler(path)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Connection", "close"),
        ]
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
        if method != "HEAD":
            writer.write(conn.send(h11.Data(data=response.body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
