"""SPDY/3.1 frame codec: bytes to events and back, with header compression.

Control frames::

    +----------------------------------+
    |1| version (15) = 3 | type (16)   |
    | flags (8) |  length (24)         |
    | payload ...                      |

Data frames::

    |0|       stream id (31)           |
    | flags (8) |  length (24)         |
    | payload ...                      |

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are a 32-bit pair count and
32-bit length-prefixed names and values, compressed with one zlib stream per
direction primed with the SPDY/3 dictionary; each block ends with a sync
flush. The receiving side must inflate every block in order, even those of
frames it then ignores, or the shared zlib context goes out of step.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from crio.streaming._dictionary import SPDY3_DICTIONARY
from crio.streaming._errors import LocalProtocolError
from crio.streaming._spdy_events import (
    MAX_DATA_LENGTH,
    Data,
    Event,
    GoAway,
    HeaderBlock,
    Headers,
    Ping,
    RstStatus,
    RstStream,
    Setting,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)

__all__ = [
    "FRAME_HEADER",
    "VERSION",
    "HeaderCompressor",
    "HeaderDecompressor",
    "decode_frame",
    "encode_frame",
    "frame_length",
]

VERSION = 3
FRAME_HEADER = 8

TYPE_SYN_STREAM = 1
TYPE_SYN_REPLY = 2
TYPE_RST_STREAM = 3
TYPE_SETTINGS = 4
TYPE_PING = 6
TYPE_GOAWAY = 7
TYPE_HEADERS = 8
TYPE_WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

#: Largest inflated header block accepted (a defence against zlib bombs).
MAX_HEADER_BLOCK = 256 * 1024

_U32 = struct.Struct(">I")
_SESSION = {"code": 1}  # session-level PROTOCOL_ERROR (GOAWAY status 1)


class HeaderCompressor:
    """Deflate header blocks for one direction of one connection."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(
            9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, SPDY3_DICTIONARY
        )

    def compress(self, headers: HeaderBlock) -> bytes:
        parts = [_U32.pack(len(headers))]
        for name, value in headers:
            parts += [_U32.pack(len(name)), name, _U32.pack(len(value)), value]
        raw = b"".join(parts)
        return self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """Inflate header blocks for one direction of one connection."""

    def __init__(self, limit: int = MAX_HEADER_BLOCK) -> None:
        self._zlib = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self._limit = limit

    def decompress(self, data: bytes, stream_id: int) -> HeaderBlock:
        """Inflate and parse one block.

        :raises LocalProtocolError: session-level (stream_id 0) when the zlib
            stream is broken or too large; stream-level PROTOCOL_ERROR when
            the inflated block is malformed (checked by the event).
        """
        try:
            raw = self._zlib.decompress(data, self._limit + 1)
        except zlib.error as exc:
            raise LocalProtocolError(f"header block does not inflate: {exc}", **_SESSION) from None
        if len(raw) > self._limit or self._zlib.unconsumed_tail:
            raise LocalProtocolError(
                f"header block inflates to more than {self._limit} bytes", **_SESSION
            )
        return _parse_block(raw, stream_id)


def _parse_block(raw: bytes, stream_id: int) -> HeaderBlock:
    def fail(why: str) -> LocalProtocolError:
        return LocalProtocolError(
            f"malformed header block: {why}", stream_id=stream_id, code=RstStatus.PROTOCOL_ERROR
        )

    if len(raw) < 4:
        raise fail("no pair count")
    (count,) = _U32.unpack_from(raw, 0)
    pos, pairs = 4, []
    for _ in range(count):
        fields = []
        for what in ("name", "value"):
            if pos + 4 > len(raw):
                raise fail(f"truncated {what} length")
            (size,) = _U32.unpack_from(raw, pos)
            pos += 4
            if pos + size > len(raw):
                raise fail(f"{what} runs past the block")
            fields.append(raw[pos : pos + size])
            pos += size
        pairs.append((fields[0], fields[1]))
    if pos != len(raw):
        raise fail(f"{len(raw) - pos} bytes after the last pair")
    return tuple(pairs)


def frame_length(head: bytes | bytearray) -> int:
    """Payload length from the first eight bytes of a frame."""
    return int.from_bytes(head[5:8], "big")


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_DATA_LENGTH:
        raise LocalProtocolError(f"control frame of {len(payload)} bytes exceeds the limit")
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def encode_frame(event: Event, compressor: HeaderCompressor) -> bytes:
    """Serialize one event; header blocks go through ``compressor`` (stateful)."""
    if isinstance(event, Data):
        flags = FLAG_FIN if event.fin else 0
        return struct.pack(">II", event.stream_id, (flags << 24) | len(event.data)) + event.data
    if isinstance(event, SynStream):
        flags = (FLAG_FIN if event.fin else 0) | (
            FLAG_UNIDIRECTIONAL if event.unidirectional else 0
        )
        head = struct.pack(
            ">IIBB", event.stream_id, event.associated_stream_id, event.priority << 5, event.slot
        )
        return _control(TYPE_SYN_STREAM, flags, head + compressor.compress(event.headers))
    if isinstance(event, SynReply | Headers):
        kind = TYPE_SYN_REPLY if isinstance(event, SynReply) else TYPE_HEADERS
        payload = _U32.pack(event.stream_id) + compressor.compress(event.headers)
        return _control(kind, FLAG_FIN if event.fin else 0, payload)
    if isinstance(event, RstStream):
        return _control(TYPE_RST_STREAM, 0, struct.pack(">II", event.stream_id, event.status))
    if isinstance(event, Settings):
        body = [_U32.pack(len(event.entries))]
        body += [struct.pack(">II", (s.flags << 24) | s.id, s.value) for s in event.entries]
        return _control(TYPE_SETTINGS, FLAG_SETTINGS_CLEAR if event.clear else 0, b"".join(body))
    if isinstance(event, Ping):
        return _control(TYPE_PING, 0, _U32.pack(event.ping_id))
    if isinstance(event, GoAway):
        payload = struct.pack(">II", event.last_good_stream_id, event.status)
        return _control(TYPE_GOAWAY, 0, payload)
    if isinstance(event, WindowUpdate):
        return _control(TYPE_WINDOW_UPDATE, 0, struct.pack(">II", event.stream_id, event.delta))
    raise LocalProtocolError(f"{type(event).__name__} is not a frame")


def decode_frame(frame: bytes, decompressor: HeaderDecompressor) -> Event | None:
    """Parse one complete frame (header and payload).

    :returns: the event, or None for a control frame type SPDY/3.1 says to ignore.
    :raises LocalProtocolError: the frame is malformed (the caller re-raises
        it as remote); ``stream_id`` 0 means the session is broken.
    """
    (first,) = _U32.unpack_from(frame, 0)
    flags = frame[4]
    payload = frame[FRAME_HEADER:]
    if not first & 0x80000000:
        if first == 0:
            raise LocalProtocolError("DATA for stream 0", **_SESSION)
        return Data(first, bytes(payload), fin=bool(flags & FLAG_FIN))
    version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
    if version != VERSION:
        raise LocalProtocolError(f"SPDY version {version} is not supported, only 3", **_SESSION)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return None  # unknown control frames must be ignored (section 2.2.1)
    return decoder(flags, payload, decompressor)


def _need(payload: bytes, size: int, what: str, exact: bool = True) -> None:
    if len(payload) < size or (exact and len(payload) != size):
        raise LocalProtocolError(
            f"{what} payload is {len(payload)} bytes, expected {size}", **_SESSION
        )


def _syn_stream(flags: int, payload: bytes, dec: HeaderDecompressor) -> Event:
    _need(payload, 10, "SYN_STREAM", exact=False)
    stream_id, assoc, pri, slot = struct.unpack_from(">IIBB", payload)
    stream_id &= 0x7FFFFFFF
    if stream_id == 0:
        dec.decompress(payload[10:], 0)
        raise LocalProtocolError("SYN_STREAM for stream 0", **_SESSION)
    headers = dec.decompress(payload[10:], stream_id)
    return SynStream(
        stream_id,
        headers,
        fin=bool(flags & FLAG_FIN),
        unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
        associated_stream_id=assoc & 0x7FFFFFFF,
        priority=pri >> 5,
        slot=slot,
    )


_Decoder = Callable[[int, bytes, "HeaderDecompressor"], Event]


def _reply_or_headers(kind: int) -> _Decoder:
    def decode(flags: int, payload: bytes, dec: HeaderDecompressor) -> Event:
        name = "SYN_REPLY" if kind == TYPE_SYN_REPLY else "HEADERS"
        _need(payload, 4, name, exact=False)
        stream_id = _U32.unpack_from(payload)[0] & 0x7FFFFFFF
        headers = dec.decompress(payload[4:], stream_id)
        if stream_id == 0:
            raise LocalProtocolError(f"{name} for stream 0", **_SESSION)
        cls = SynReply if kind == TYPE_SYN_REPLY else Headers
        return cls(stream_id, headers, fin=bool(flags & FLAG_FIN))

    return decode


def _rst_stream(flags: int, payload: bytes, dec: HeaderDecompressor) -> Event:
    _need(payload, 8, "RST_STREAM")
    stream_id, status = struct.unpack(">II", payload)
    stream_id &= 0x7FFFFFFF
    if stream_id == 0 or status not in RstStatus._value2member_map_:
        raise LocalProtocolError(f"RST_STREAM for stream {stream_id} status {status}", **_SESSION)
    return RstStream(stream_id, RstStatus(status))


def _settings(flags: int, payload: bytes, dec: HeaderDecompressor) -> Event:
    _need(payload, 4, "SETTINGS", exact=False)
    (count,) = _U32.unpack_from(payload)
    _need(payload, 4 + 8 * count, "SETTINGS")
    entries = {}
    for index in range(count):
        id_flags, value = struct.unpack_from(">II", payload, 4 + 8 * index)
        setting = Setting(id_flags & 0xFFFFFF, value, id_flags >> 24)
        entries.setdefault(setting.id, setting)  # the first of duplicate ids wins (2.6.4)
    return Settings(tuple(entries.values()), clear=bool(flags & FLAG_SETTINGS_CLEAR))


def _ping(flags: int, payload: bytes, dec: HeaderDecompressor) -> Event:
    _need(payload, 4, "PING")
    return Ping(_U32.unpack(payload)[0])


def _goaway(flags: int, payload: bytes, dec: HeaderDecompressor) -> Event:
    _need(payload, 8, "GOAWAY")
    last, status = struct.unpack(">II", payload)
    return GoAway(last & 0x7FFFFFFF, status if status <= 2 else 2)


def _window_update(flags: int, payload: bytes, dec: HeaderDecompressor) -> Event:
    _need(payload, 8, "WINDOW_UPDATE")
    stream_id, delta = struct.unpack(">II", payload)
    return WindowUpdate(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)


_DECODERS: dict[int, _Decoder] = {
    TYPE_SYN_STREAM: _syn_stream,
    TYPE_SYN_REPLY: _reply_or_headers(TYPE_SYN_REPLY),
    TYPE_RST_STREAM: _rst_stream,
    TYPE_SETTINGS: _settings,
    TYPE_PING: _ping,
    TYPE_GOAWAY: _goaway,
    TYPE_HEADERS: _reply_or_headers(TYPE_HEADERS),
    TYPE_WINDOW_UPDATE: _window_update,
}
