"""SPDY/3.1 events: one frozen dataclass per frame type, checked when built.

Do not subclass these. Every event validates its own fields, so an illegal
frame cannot be built, neither by the caller (LocalProtocolError from the
constructor) nor by the decoder (re-raised as RemoteProtocolError).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from crio.streaming._errors import LocalProtocolError

__all__ = [
    "MAX_DATA_LENGTH",
    "MAX_STREAM_ID",
    "MAX_WINDOW",
    "ConnectionClosed",
    "Data",
    "Event",
    "GoAway",
    "GoAwayStatus",
    "HeaderBlock",
    "Headers",
    "Ping",
    "RstStatus",
    "RstStream",
    "Setting",
    "SettingId",
    "Settings",
    "SynReply",
    "SynStream",
    "WindowUpdate",
    "header_value",
    "make_headers",
]

MAX_STREAM_ID = 0x7FFFFFFF
MAX_WINDOW = 0x7FFFFFFF
#: A frame's length field has 24 bits.
MAX_DATA_LENGTH = 0xFFFFFF

HeaderBlock = tuple[tuple[bytes, bytes], ...]


class RstStatus(enum.IntEnum):
    """RST_STREAM status codes (SPDY/3.1 section 2.6.3)."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    """GOAWAY status codes (SPDY/3.1 section 2.6.6)."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(enum.IntEnum):
    """SETTINGS ids (SPDY/3.1 section 2.6.4); only INITIAL_WINDOW_SIZE has an effect here."""

    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


def _check_stream_id(stream_id: int, *, zero_ok: bool = False) -> None:
    low = 0 if zero_ok else 1
    if not low <= stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"stream id {stream_id} is outside {low}..{MAX_STREAM_ID}")


def _check_headers(headers: HeaderBlock, stream_id: int) -> None:
    seen: set[bytes] = set()
    for pair in headers:
        if len(pair) != 2 or not all(isinstance(part, bytes) for part in pair):
            raise LocalProtocolError(f"header {pair!r} is not a (bytes, bytes) pair")
        name, value = pair
        if not name:
            raise LocalProtocolError("zero-length header name", stream_id=stream_id, code=1)
        if name != name.lower():
            raise LocalProtocolError(
                f"header name {name!r} is not lowercase", stream_id=stream_id, code=1
            )
        if name in seen:
            raise LocalProtocolError(f"duplicate header {name!r}", stream_id=stream_id, code=1)
        seen.add(name)
        if value.startswith(b"\0") or value.endswith(b"\0") or b"\0\0" in value:
            raise LocalProtocolError(
                f"header {name!r} has an empty value between NUL separators",
                stream_id=stream_id,
                code=1,
            )


def make_headers(items: Iterable[tuple[str | bytes, str | bytes]]) -> HeaderBlock:
    """Build a header block from str or bytes pairs; names are lowercased."""
    out = []
    for name, value in items:
        raw_name = name.encode("latin-1") if isinstance(name, str) else name
        raw_value = value.encode("latin-1") if isinstance(value, str) else value
        out.append((raw_name.lower(), raw_value))
    return tuple(out)


def header_value(headers: HeaderBlock, name: bytes) -> bytes | None:
    """The value of header ``name`` (lowercase), or None when absent."""
    for key, value in headers:
        if key == name:
            return value
    return None


class Event:
    """Base of every SPDY event. Do not subclass outside this module."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SynStream(Event):
    """SYN_STREAM: open a stream. ``unidirectional``: the receiver may not send on it."""

    stream_id: int
    headers: HeaderBlock = ()
    fin: bool = False
    unidirectional: bool = False
    associated_stream_id: int = 0
    priority: int = 0
    slot: int = 0

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        _check_stream_id(self.associated_stream_id, zero_ok=True)
        if not 0 <= self.priority <= 7:
            raise LocalProtocolError(f"priority {self.priority} is outside 0..7")
        if not 0 <= self.slot <= 255:
            raise LocalProtocolError(f"slot {self.slot} is outside 0..255")
        _check_headers(self.headers, self.stream_id)


@dataclass(frozen=True, slots=True)
class SynReply(Event):
    """SYN_REPLY: accept a stream the peer opened."""

    stream_id: int
    headers: HeaderBlock = ()
    fin: bool = False

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        _check_headers(self.headers, self.stream_id)


@dataclass(frozen=True, slots=True)
class RstStream(Event):
    """RST_STREAM: end a stream abnormally, both directions."""

    stream_id: int
    status: RstStatus = RstStatus.CANCEL

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        if not isinstance(self.status, RstStatus):
            try:
                object.__setattr__(self, "status", RstStatus(self.status))
            except ValueError:
                raise LocalProtocolError(f"unknown RST_STREAM status {self.status}") from None


@dataclass(frozen=True, slots=True)
class Setting:
    """One SETTINGS entry; ``flags`` 1 = persist value, 2 = persisted."""

    id: int
    value: int
    flags: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.id <= 0xFFFFFF:
            raise LocalProtocolError(f"setting id {self.id} is outside 1..{0xFFFFFF}")
        if not 0 <= self.value <= 0xFFFFFFFF:
            raise LocalProtocolError(f"setting {self.id} value {self.value} is not 32-bit")
        if not 0 <= self.flags <= 0xFF:
            raise LocalProtocolError(f"setting {self.id} flags {self.flags} are not 8-bit")
        if self.id == SettingId.INITIAL_WINDOW_SIZE and self.value > MAX_WINDOW:
            raise LocalProtocolError(f"initial window size {self.value} exceeds {MAX_WINDOW}")


@dataclass(frozen=True, slots=True)
class Settings(Event):
    """SETTINGS: connection parameters; ``clear`` drops persisted settings."""

    entries: tuple[Setting, ...] = ()
    clear: bool = False

    def __post_init__(self) -> None:
        ids = [entry.id for entry in self.entries]
        if len(ids) != len(set(ids)):
            raise LocalProtocolError(f"SETTINGS names an id twice: {ids}")


@dataclass(frozen=True, slots=True)
class Ping(Event):
    """PING: the receiver echoes a ping whose id has the sender's parity."""

    ping_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.ping_id <= 0xFFFFFFFF:
            raise LocalProtocolError(f"ping id {self.ping_id} is not 32-bit")


@dataclass(frozen=True, slots=True)
class GoAway(Event):
    """GOAWAY: no new streams; streams up to ``last_good_stream_id`` go on."""

    last_good_stream_id: int = 0
    status: GoAwayStatus = GoAwayStatus.OK

    def __post_init__(self) -> None:
        _check_stream_id(self.last_good_stream_id, zero_ok=True)
        if not isinstance(self.status, GoAwayStatus):
            try:
                object.__setattr__(self, "status", GoAwayStatus(self.status))
            except ValueError:
                raise LocalProtocolError(f"unknown GOAWAY status {self.status}") from None


@dataclass(frozen=True, slots=True)
class Headers(Event):
    """HEADERS: more headers for an open stream."""

    stream_id: int
    headers: HeaderBlock = ()
    fin: bool = False

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        _check_headers(self.headers, self.stream_id)


@dataclass(frozen=True, slots=True)
class WindowUpdate(Event):
    """WINDOW_UPDATE: the sender may receive ``delta`` more bytes; stream 0 is the session."""

    stream_id: int
    delta: int

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id, zero_ok=True)
        if not 1 <= self.delta <= MAX_WINDOW:
            raise LocalProtocolError(
                f"window delta {self.delta} is outside 1..{MAX_WINDOW}",
                stream_id=self.stream_id,
                code=RstStatus.PROTOCOL_ERROR,
            )


@dataclass(frozen=True, slots=True)
class Data(Event):
    """DATA: payload bytes of a stream; ``fin`` half-closes the sender's side."""

    stream_id: int
    data: bytes = b""
    fin: bool = False

    def __post_init__(self) -> None:
        _check_stream_id(self.stream_id)
        if len(self.data) > MAX_DATA_LENGTH:
            raise LocalProtocolError(
                f"DATA of {len(self.data)} bytes exceeds the frame limit {MAX_DATA_LENGTH}"
            )


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed its side of the transport (EOF)."""
