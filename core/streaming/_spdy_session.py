"""The asyncio side of a SPDY session: read, feed, dispatch, write.

:class:`SpdySession` owns one upgraded connection and its
:class:`~crio.streaming.spdy.SpdyConnection`. Streams the client opens are
answered with SYN_REPLY at once (as spdystream does) and queued on
:attr:`SpdySession.incoming`; each is a :class:`SpdyStream` to read and
write. Writes wait on the transport (``drain``) and, for a peer that does
flow control, on its windows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from crio.streaming import spdy
from crio.streaming.spdy import NEED_DATA, Role, RstStatus, SpdyConnection

__all__ = ["SpdySession", "SpdyStream"]

log = logging.getLogger("crio.streaming")

#: DATA frames we send are at most this big.
FRAME_CHUNK = 128 * 1024
#: A stream buffers at most this much unread input before the session stops reading.
READ_BUFFER = 1024 * 1024


class SpdyStream:
    """One stream the client opened."""

    def __init__(self, session: SpdySession, stream_id: int, headers: spdy.HeaderBlock) -> None:
        self.session = session
        self.stream_id = stream_id
        self.headers = headers
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._fin = False
        self._failed: BaseException | None = None
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._window = asyncio.Event()

    def header(self, name: bytes) -> bytes | None:
        return spdy.header_value(self.headers, name)

    # ------------------------------------------------------------ fed by the session

    def _data(self, data: bytes, fin: bool) -> None:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered >= READ_BUFFER:
                self._room.clear()
        self._fin = self._fin or fin
        self._readable.set()

    def _fail(self, exc: BaseException) -> None:
        if self._failed is None and not self._fin:
            self._failed = exc
        self._readable.set()
        self._room.set()
        self._window.set()

    # ------------------------------------------------------------ used by sessions

    async def read(self) -> bytes:
        """The next chunk; b"" once the client half-closed.

        :raises ConnectionResetError: the stream was reset or the connection lost.
        """
        while not self._chunks:
            if self._failed is not None:
                raise ConnectionResetError(str(self._failed))
            if self._fin:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < READ_BUFFER:
            self._room.set()
        self.session._consumed(self.stream_id, len(chunk))
        return chunk

    async def write(self, data: bytes) -> None:
        """Send ``data`` as DATA frames, honouring the peer's window if it keeps one."""
        view = memoryview(data)
        conn = self.session.conn
        while view:
            if self._failed is not None:
                raise ConnectionResetError(str(self._failed))
            size = min(len(view), FRAME_CHUNK)
            if conn.peer_flow_control:
                window = conn.send_window(self.stream_id)
                if window <= 0:
                    self._window.clear()
                    await self._window.wait()
                    continue
                size = min(size, window)
            self.session._send(spdy.Data(self.stream_id, bytes(view[:size])))
            view = view[size:]
            await self.session.drain()

    async def close(self) -> None:
        """Half-close our side (DATA with FIN), if it is still open."""
        if self._failed is None and self.session.conn.is_open(self.stream_id, local=True):
            self.session._send(spdy.Data(self.stream_id, b"", fin=True))
            await self.session.drain()

    def reset(self, status: RstStatus = RstStatus.CANCEL) -> None:
        if self.session.conn.is_open(self.stream_id, local=True) or self.session.conn.is_open(
            self.stream_id, local=False
        ):
            self.session._send(spdy.RstStream(self.stream_id, status))
        self._fail(ConnectionResetError(f"stream {self.stream_id} reset by us"))


class SpdySession:
    """One SPDY connection from a client (we are the server)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        idle_timeout: float = 0.0,
        initial: bytes = b"",
    ) -> None:
        self.reader = reader
        self.writer = writer
        # spdystream peers ignore windows: count them, never refuse over them.
        self.conn = SpdyConnection(Role.SERVER, enforce_windows=False)
        self.incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self.streams: dict[int, SpdyStream] = {}
        self.closed = asyncio.Event()
        self.idle_timeout = idle_timeout
        self._initial = initial
        self._last_activity = asyncio.get_running_loop().time()
        self._lost: BaseException | None = None

    # ------------------------------------------------------------------ writing

    def _send(self, event: spdy.Event) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("connection closed")
        self.writer.write(self.conn.send(event))
        self._last_activity = asyncio.get_running_loop().time()

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except ConnectionError as exc:
            self._lose(exc)
            raise

    def _consumed(self, stream_id: int, size: int) -> None:
        update = self.conn.acknowledge(stream_id, size)
        if update and not self.writer.is_closing():
            self.writer.write(update)

    # ------------------------------------------------------------------ reading

    async def run(self) -> None:
        """Read and dispatch frames until the client goes or the session ends."""
        idle = asyncio.create_task(self._watch_idle()) if self.idle_timeout > 0 else None
        try:
            if self._initial:
                await self._feed(self._initial)
            while not self.closed.is_set():
                data = await self.reader.read(256 * 1024)
                self._last_activity = asyncio.get_running_loop().time()
                await self._feed(data)
                if not data:
                    break
        except (ConnectionError, OSError) as exc:
            self._lose(exc)
        except spdy.RemoteProtocolError as exc:
            log.info("streaming: SPDY session error from the client: %s", exc)
            with contextlib.suppress(ConnectionError, spdy.LocalProtocolError):
                self._send(spdy.GoAway(0, spdy.GoAwayStatus(exc.code or 1)))
            self._lose(exc)
        finally:
            if idle is not None:
                idle.cancel()
            self._lose(ConnectionResetError("client closed the connection"))

    async def _feed(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except spdy.RemoteProtocolError as exc:
                if exc.stream_id == 0:
                    raise
                log.info("streaming: stream error on %d: %s", exc.stream_id, exc)
                self._send(spdy.RstStream(exc.stream_id, RstStatus(exc.code)))
                stream = self.streams.pop(exc.stream_id, None)
                if stream is not None:
                    stream._fail(exc)
                continue
            if event is NEED_DATA or isinstance(event, spdy.ConnectionClosed):
                return
            await self._dispatch(event)

    async def _dispatch(self, event: spdy.Event) -> None:
        if isinstance(event, spdy.SynStream):
            stream = SpdyStream(self, event.stream_id, event.headers)
            self.streams[event.stream_id] = stream
            self._send(spdy.SynReply(event.stream_id))
            if event.fin:
                stream._data(b"", True)
            self.incoming.put_nowait(stream)
        elif isinstance(event, spdy.Data):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._data(event.data, event.fin)
                await stream._room.wait()
        elif isinstance(event, spdy.RstStream):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream._fail(ConnectionResetError(f"client reset stream {event.stream_id}"))
        elif isinstance(event, spdy.Ping):
            if event.ping_id % 2 == 1:  # the client's: echo it
                self._send(event)
        elif isinstance(event, spdy.WindowUpdate):
            targets = (
                self.streams.values()
                if event.stream_id == 0
                else [s for s in [self.streams.get(event.stream_id)] if s is not None]
            )
            for stream in targets:
                stream._window.set()
        elif isinstance(event, spdy.Headers) and event.fin:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._data(b"", True)
        elif isinstance(event, spdy.Settings):
            for stream in self.streams.values():
                stream._window.set()

    async def _watch_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed.is_set():
            remaining = self._last_activity + self.idle_timeout - loop.time()
            if remaining <= 0:
                log.info("streaming: closing a SPDY connection idle for %.0fs", self.idle_timeout)
                self._lose(TimeoutError("idle timeout"))
                self.writer.close()
                return
            await asyncio.sleep(remaining)

    def _lose(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        self.closed.set()
        for stream in self.streams.values():
            stream._fail(exc)
        self.incoming.put_nowait(None)

    # ------------------------------------------------------------------ ending

    async def finish(self) -> None:
        """GOAWAY, then close the transport (the session's work is done)."""
        if not self.writer.is_closing():
            with contextlib.suppress(ConnectionError, spdy.LocalProtocolError):
                self._send(spdy.GoAway(self.conn.last_remote_stream_id))
                await self.drain()
            self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
