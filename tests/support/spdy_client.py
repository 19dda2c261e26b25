"""A SPDY/3.1 streaming client for the tests and benches, written from the spec.

It deliberately shares no code with ``crio.streaming``: its frames, header
compression (with its own copy of the SPDY/3 dictionary, built from the
spec's word list) and HTTP upgrade are separate, so that a bug in crio's
protocol code cannot hide behind the same bug in its client.

It speaks to any Kubernetes streaming server (crio's, containerd's) the way
client-go does: ``Upgrade: SPDY/3.1`` with ``X-Stream-Protocol-Version``
offers, then one SPDY stream per ``streamType``. With ``flow_control=False``
(the default) it behaves like moby/spdystream, the library kubectl and the
kubelet use: no SETTINGS, no WINDOW_UPDATE, windows ignored. With
``flow_control=True`` it announces its window with SETTINGS, sends
WINDOW_UPDATE as it consumes and never sends past the server's windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import struct
import urllib.parse
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ExecOutcome",
    "HandshakeError",
    "SpdyClient",
    "SpdyClientStream",
    "exec_session",
    "spec_dictionary",
]

# SPDY/3 section 2.6.10.1: the dictionary is these names and values, each with a
# 32-bit big-endian length, followed by one run of text without lengths.
_DICT_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base "
    "content-encoding content-language content-length content-location content-md5 "
    "content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status 200_OK version HTTP/1.1 url public set-cookie keep-alive origin"
)
_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def spec_dictionary() -> bytes:
    words = [word.replace("_", " ") for word in _DICT_WORDS.split(" ")]
    out = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words)
    return out + _DICT_TAIL.encode()


_DICT = spec_dictionary()
_SYN_STREAM, _SYN_REPLY, _RST, _SETTINGS, _PING, _GOAWAY, _HEADERS, _WINDOW = 1, 2, 3, 4, 6, 7, 8, 9
_WINDOW0 = 65536


class HandshakeError(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body.decode(errors='replace').strip()}")
        self.status = status
        self.headers = headers
        self.body = body


class SpdyClientStream:
    def __init__(self, client: SpdyClient, stream_id: int, headers: Mapping[str, str]) -> None:
        self.client = client
        self.stream_id = stream_id
        self.headers = dict(headers)
        self.replied = asyncio.get_running_loop().create_future()
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()  # b"" = FIN or reset
        self.reset_status = 0
        self.send_window = _WINDOW0
        self.window_open = asyncio.Event()
        self.window_open.set()
        self._unacked = 0

    async def read(self) -> bytes:
        chunk = await self.chunks.get()
        if chunk:
            await self.client._consumed(self, len(chunk))
        else:
            self.chunks.put_nowait(b"")  # stay at EOF
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            size = len(view) if not self.client.flow_control else await self._window(len(view))
            await self.client._send_data(self.stream_id, bytes(view[:size]), fin=False)
            view = view[size:]

    async def _window(self, wanted: int) -> int:
        while min(self.send_window, self.client.session_send_window) <= 0:
            self.window_open.clear()
            self.client.session_window_open.clear()
            waits = [self.window_open.wait(), self.client.session_window_open.wait()]
            await asyncio.wait(
                [asyncio.ensure_future(w) for w in waits], return_when="FIRST_COMPLETED"
            )
        size = min(wanted, self.send_window, self.client.session_send_window, 1 << 20)
        self.send_window -= size
        self.client.session_send_window -= size
        return size

    async def close(self) -> None:
        await self.client._send_data(self.stream_id, b"", fin=True)

    async def reset(self) -> None:
        await self.client._send(_control(_RST, 0, struct.pack(">II", self.stream_id, 5)))


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8003, kind, (flags << 24) | len(payload)) + payload


class SpdyClient:
    """One upgraded connection; open streams with :meth:`open_stream`."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flow_control: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.flow_control = flow_control
        self.protocol = ""
        self.streams: dict[int, SpdyClientStream] = {}
        self.next_id = 1
        self.goaway = asyncio.Event()
        self.closed = asyncio.Event()
        self.session_send_window = _WINDOW0
        self.session_window_open = asyncio.Event()
        self.session_window_open.set()
        self._session_unacked = 0
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, _DICT)
        self._inflate = zlib.decompressobj(zdict=_DICT)
        self._lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        protocols: Sequence[str] = ("v4.channel.k8s.io",),
        *,
        ssl_context: ssl.SSLContext | None = None,
        flow_control: bool = False,
        method: str = "POST",
    ) -> SpdyClient:
        parts = urllib.parse.urlsplit(url)
        tls = ssl_context if parts.scheme == "https" else None
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=tls)
        lines = [
            f"{method} {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Connection: Upgrade",
            "Upgrade: SPDY/3.1",
            *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
            "Content-Length: 0",
            "",
            "",
        ]
        writer.write("\r\n".join(lines).encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            writer.close()
            raise HandshakeError(0, {}, exc.partial) from None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                key = name.strip().lower()
                headers[key] = ", ".join(filter(None, [headers.get(key), value.strip()]))
        if status != 101:
            size = int(headers.get("content-length", "0"))
            body = await reader.readexactly(size) if size else b""
            writer.close()
            raise HandshakeError(status, headers, body)
        if headers.get("upgrade", "").lower() != "spdy/3.1":
            writer.close()
            raise HandshakeError(status, headers, b"101 without Upgrade: SPDY/3.1")
        client = cls(reader, writer, flow_control)
        client.protocol = headers.get("x-stream-protocol-version", "")
        if flow_control:
            entry = struct.pack(">II", 7, _WINDOW0)  # INITIAL_WINDOW_SIZE
            await client._send(_control(_SETTINGS, 0, struct.pack(">I", 1) + entry))
        client._reader_task = asyncio.create_task(client._read_loop())
        return client

    # ------------------------------------------------------------------ frames out

    async def _send(self, frame: bytes) -> None:
        self.writer.write(frame)
        await self.writer.drain()

    async def _send_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        flags = 1 if fin else 0
        await self._send(struct.pack(">II", stream_id, (flags << 24) | len(data)) + data)

    def _block(self, headers: Mapping[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            key, val = name.lower().encode(), value.encode()
            raw += struct.pack(">I", len(key)) + key + struct.pack(">I", len(val)) + val
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    async def open_stream(
        self, headers: Mapping[str, str], *, fin: bool = False
    ) -> SpdyClientStream:
        """SYN_STREAM, then wait for the SYN_REPLY (as client-go does)."""
        async with self._lock:  # ids must reach the wire in order
            stream_id = self.next_id
            self.next_id += 2
            stream = SpdyClientStream(self, stream_id, headers)
            self.streams[stream_id] = stream
            head = struct.pack(">IIBB", stream_id, 0, 0, 0)
            self.writer.write(_control(_SYN_STREAM, 1 if fin else 0, head + self._block(headers)))
        await self.writer.drain()
        await stream.replied
        return stream

    async def _consumed(self, stream: SpdyClientStream, size: int) -> None:
        if not self.flow_control:
            return
        stream._unacked += size
        self._session_unacked += size
        if stream._unacked >= _WINDOW0 // 2:
            await self._send(
                _control(_WINDOW, 0, struct.pack(">II", stream.stream_id, stream._unacked))
            )
            stream._unacked = 0
        if self._session_unacked >= _WINDOW0 // 2:
            await self._send(_control(_WINDOW, 0, struct.pack(">II", 0, self._session_unacked)))
            self._session_unacked = 0

    # ------------------------------------------------------------------ frames in

    def _headers(self, block: bytes) -> dict[str, str]:
        raw = self._inflate.decompress(block)
        (count,) = struct.unpack_from(">I", raw)
        pos, out = 4, {}
        for _ in range(count):
            (size,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4 : pos + 4 + size].decode()
            pos += 4 + size
            (size,) = struct.unpack_from(">I", raw, pos)
            out[name] = raw[pos + 4 : pos + 4 + size].decode()
            pos += 4 + size
        return out

    async def _read_loop(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(8)
                first, flags_len = struct.unpack(">II", head)
                payload = await self.reader.readexactly(flags_len & 0xFFFFFF)
                await self._frame(first, flags_len >> 24, payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            for stream in self.streams.values():
                stream.chunks.put_nowait(b"")
                if not stream.replied.done():
                    stream.replied.set_exception(ConnectionError("connection closed"))

    async def _frame(self, first: int, flags: int, payload: bytes) -> None:
        if not first & 0x80000000:
            stream = self.streams.get(first)
            if stream is not None:
                if payload:
                    stream.chunks.put_nowait(payload)
                if flags & 1:
                    stream.chunks.put_nowait(b"")
            return
        kind = first & 0xFFFF
        if kind == _SYN_REPLY:
            (sid,) = struct.unpack_from(">I", payload)
            self._headers(payload[4:])
            stream = self.streams.get(sid & 0x7FFFFFFF)
            if stream is not None and not stream.replied.done():
                stream.replied.set_result(None)
            if stream is not None and flags & 1:
                stream.chunks.put_nowait(b"")
        elif kind in (_SYN_STREAM, _HEADERS):
            self._headers(payload[10:] if kind == _SYN_STREAM else payload[4:])
        elif kind == _RST:
            sid, status = struct.unpack(">II", payload)
            stream = self.streams.get(sid)
            if stream is not None:
                stream.reset_status = status
                stream.chunks.put_nowait(b"")
                if not stream.replied.done():
                    stream.replied.set_exception(ConnectionError(f"stream reset ({status})"))
        elif kind == _PING:
            await self._send(_control(_PING, 0, payload))
        elif kind == _GOAWAY:
            self.goaway.set()
        elif kind == _WINDOW:
            sid, delta = struct.unpack(">II", payload)
            if sid == 0:
                self.session_send_window += delta
                self.session_window_open.set()
            elif sid in self.streams:
                self.streams[sid].send_window += delta
                self.streams[sid].window_open.set()

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        if self._reader_task is not None:
            await self._reader_task
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@dataclass
class ExecOutcome:
    protocol: str
    stdout: bytes = b""
    stderr: bytes = b""
    error: bytes = b""
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 on Success; the NonZeroExitCode cause otherwise (v4's Status)."""
        if not self.status or self.status.get("status") == "Success":
            return 0
        for cause in self.status.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
        raise AssertionError(f"failure without an exit code: {self.status}")


async def exec_session(
    url: str,
    *,
    stdin: bytes | None = None,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    resize: Sequence[tuple[int, int]] = (),
    protocols: Sequence[str] = ("v4.channel.k8s.io", "v3.channel.k8s.io"),
    ssl_context: ssl.SSLContext | None = None,
    flow_control: bool = False,
    keep_stdin_open: bool = False,
) -> ExecOutcome:
    """Run one exec or attach session the way client-go's v4 protocol does."""
    client = await SpdyClient.connect(
        url, protocols, ssl_context=ssl_context, flow_control=flow_control
    )
    try:
        outcome = ExecOutcome(client.protocol)
        error = await client.open_stream({"streamType": "error"})
        streams: dict[str, SpdyClientStream] = {}
        for kind, wanted in (
            ("stdin", stdin is not None),
            ("stdout", stdout),
            ("stderr", stderr and not tty),
        ):
            if wanted:
                streams[kind] = await client.open_stream({"streamType": kind})
        if tty and client.protocol in ("v3.channel.k8s.io", "v4.channel.k8s.io"):
            streams["resize"] = await client.open_stream({"streamType": "resize"})
            for width, height in resize:
                await streams["resize"].write(
                    json.dumps({"Width": width, "Height": height}).encode()
                )
        if stdin is not None:
            if stdin:
                await streams["stdin"].write(stdin)
            if not keep_stdin_open:
                await streams["stdin"].close()
        readers = {
            k: asyncio.create_task(s.read_all())
            for k, s in streams.items()
            if k in ("stdout", "stderr")
        }
        outcome.error = await error.read_all()
        for kind, task in readers.items():
            setattr(outcome, kind, await task)
        if outcome.error and client.protocol == "v4.channel.k8s.io":
            outcome.status = json.loads(outcome.error)
        return outcome
    finally:
        await client.close()
