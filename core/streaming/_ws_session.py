"""The asyncio side of a channel WebSocket: read, feed, dispatch, write."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from crio.streaming._errors import RemoteProtocolError
from crio.streaming.websocket import (
    NEED_DATA,
    ChannelClose,
    ChannelConnection,
    ChannelData,
    Closed,
)

__all__ = ["Inbound", "WsSession"]

log = logging.getLogger("crio.streaming")

#: Largest payload per message we send.
MESSAGE_CHUNK = 128 * 1024


class Inbound:
    """What the client sends on one channel, to be read in order."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._eof = False
        self._failed: BaseException | None = None
        self._readable = asyncio.Event()

    def _data(self, data: bytes) -> None:
        if data and not self._eof:
            self._chunks.append(data)
            self._readable.set()

    def _close(self) -> None:
        self._eof = True
        self._readable.set()

    def _fail(self, exc: BaseException) -> None:
        if self._failed is None and not self._eof:
            self._failed = exc
        self._readable.set()

    async def read(self) -> bytes:
        """The next chunk; b"" at the channel's end.

        :raises ConnectionResetError: the connection was lost first.
        """
        while not self._chunks:
            if self._failed is not None:
                raise ConnectionResetError(str(self._failed))
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        return self._chunks.popleft()


class WsSession:
    """One accepted channel WebSocket from a client."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: ChannelConnection,
        readable: set[int],
        idle_timeout: float = 0.0,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.inbound = {channel: Inbound() for channel in readable}
        self.closed = asyncio.Event()
        self.idle_timeout = idle_timeout
        self._last_activity = asyncio.get_running_loop().time()

    async def send(self, channel: int, data: bytes) -> None:
        """Write ``data`` on ``channel`` (empty data still sends one message)."""
        if self.closed.is_set():
            raise ConnectionResetError("websocket closed")
        view = memoryview(data)
        while True:
            chunk, view = bytes(view[:MESSAGE_CHUNK]), view[MESSAGE_CHUNK:]
            self.writer.write(self.conn.send(channel, chunk))
            self._last_activity = asyncio.get_running_loop().time()
            try:
                await self.writer.drain()
            except ConnectionError as exc:
                self._lose(exc)
                raise
            if not view:
                return

    async def run(self, initial: bytes = b"") -> None:
        idle = asyncio.create_task(self._watch_idle()) if self.idle_timeout > 0 else None
        try:
            if initial:
                self._feed(initial)
            while not self.closed.is_set():
                data = await self.reader.read(256 * 1024)
                self._last_activity = asyncio.get_running_loop().time()
                self._feed(data)
                if not data:
                    break
        except (ConnectionError, OSError) as exc:
            self._lose(exc)
        except RemoteProtocolError as exc:
            log.info("streaming: websocket error from the client: %s", exc)
            with contextlib.suppress(Exception):
                self.writer.write(self.conn.close(1002, "protocol error"))
            self._lose(exc)
        finally:
            if idle is not None:
                idle.cancel()
            self._lose(ConnectionResetError("client closed the connection"))

    def _feed(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while (event := self.conn.next_event()) is not NEED_DATA:
            if isinstance(event, ChannelData):
                channel = self.inbound.get(event.channel)
                if channel is not None:
                    channel._data(event.data)
            elif isinstance(event, ChannelClose):
                channel = self.inbound.get(event.channel)
                if channel is not None:
                    channel._close()
            elif isinstance(event, Closed):
                self._lose(ConnectionResetError(f"websocket closed ({event.code})"))
        reply = self.conn.data_to_send()
        if reply and not self.writer.is_closing():
            self.writer.write(reply)

    async def _watch_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed.is_set():
            remaining = self._last_activity + self.idle_timeout - loop.time()
            if remaining <= 0:
                log.info("streaming: closing a websocket idle for %.0fs", self.idle_timeout)
                self._lose(TimeoutError("idle timeout"))
                self.writer.close()
                return
            await asyncio.sleep(remaining)

    def _lose(self, exc: BaseException) -> None:
        self.closed.set()
        for channel in self.inbound.values():
            channel._fail(exc)

    async def finish(self, code: int = 1000) -> None:
        """Send the close frame and end the transport."""
        if not self.writer.is_closing():
            with contextlib.suppress(Exception):
                self.writer.write(self.conn.close(code))
                await self.writer.drain()
            self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
