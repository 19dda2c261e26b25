"""A sans-I/O tar reader: bytes in, events out.

:class:`TarReader` never reads a file or a socket. Feed it bytes with
:meth:`~TarReader.receive_data` (``b""`` marks the end of the stream) and
take events with :meth:`~TarReader.next_event` until it returns
:data:`NEED_DATA`. Every byte fed in comes out exactly once, either as a
:class:`Segment` (headers, extension headers, padding, the end-of-archive
blocks and anything after them) or as :class:`Data` (file contents). That
is what tar-split needs to rebuild a layer tar byte for byte from the files
on disk, and what the tests check: ``b"".join(segments and data) == input``.

Formats: POSIX ustar (with ``prefix``), PAX extended headers (``path``,
``linkpath``, ``size``, ``uid``, ``gid``, ``uname``, ``gname``, ``mtime``,
``SCHILY.xattr.*``), GNU long names and long links (``L``/``K``), base-256
numbers. GNU sparse files and multi-volume archives are refused.
Malformed input raises :class:`TarFormatError` naming the offset.
"""

from __future__ import annotations

import enum
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "BLOCK",
    "NEED_DATA",
    "Data",
    "End",
    "Member",
    "MemberEnd",
    "Segment",
    "TarFormatError",
    "TarHeader",
    "TarReader",
    "TarType",
]

BLOCK: Final = 512
_MAX_EXTENSION = 1 << 20  # PAX and GNU long-name records larger than 1 MiB are refused


class TarFormatError(ValueError):
    """The stream is not a tar archive crio can read; the message names the offset."""


class TarType(enum.Enum):
    REGULAR = "0"
    HARDLINK = "1"
    SYMLINK = "2"
    CHAR = "3"
    BLOCK = "4"
    DIRECTORY = "5"
    FIFO = "6"


_TYPES = {
    b"0": TarType.REGULAR,
    b"\0": TarType.REGULAR,
    b"7": TarType.REGULAR,  # contiguous file: a regular file everywhere that matters
    b"1": TarType.HARDLINK,
    b"2": TarType.SYMLINK,
    b"3": TarType.CHAR,
    b"4": TarType.BLOCK,
    b"5": TarType.DIRECTORY,
    b"6": TarType.FIFO,
}
#: Types whose size field is ignored: they carry no data (as Go's archive/tar).
_HEADER_ONLY = {
    TarType.HARDLINK,
    TarType.SYMLINK,
    TarType.CHAR,
    TarType.BLOCK,
    TarType.DIRECTORY,
    TarType.FIFO,
}


@dataclass(frozen=True, slots=True)
class TarHeader:
    """One archive member, with extension headers already applied.

    ``name`` and ``linkname`` are bytes exactly as in the archive (they may
    not be UTF-8 and may hold anything; validating them is the applier's job).
    """

    name: bytes
    type: TarType
    size: int = 0
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 0.0
    linkname: bytes = b""
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()
    #: Offset of the member's first header block (extension headers included).
    offset: int = 0


class _Event:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Segment(_Event):
    """Archive bytes that are not file content."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Member(_Event):
    """A member's headers were read; its :class:`Data` follows, then :class:`MemberEnd`."""

    header: TarHeader


@dataclass(frozen=True, slots=True)
class Data(_Event):
    """A piece of the current member's content."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MemberEnd(_Event):
    """The current member's content is complete."""


@dataclass(frozen=True, slots=True)
class End(_Event):
    """The stream ended; ``clean`` is False when it ended without end-of-archive blocks."""

    clean: bool = True


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


class _State(enum.Enum):
    HEADER = 1
    EXTENSION = 2
    DATA = 3
    PADDING = 4
    TRAILER = 5
    DONE = 6


@dataclass(slots=True)
class _Pending:
    """Extension headers seen before the member they apply to."""

    pax: dict[str, bytes] = field(default_factory=dict)
    long_name: bytes | None = None
    long_link: bytes | None = None
    offset: int = -1


def _parse_number(field_bytes: bytes, what: str, offset: int) -> int:
    if field_bytes and field_bytes[0] & 0x80:
        # base-256: the first byte's high bit marks it, 0xff for negative numbers
        value = int.from_bytes(field_bytes, "big", signed=False)
        if field_bytes[0] == 0xFF:
            value -= 1 << (8 * len(field_bytes))
        else:
            value &= (1 << (8 * len(field_bytes) - 1)) - 1
        return value
    text = field_bytes.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"bad {what} field {field_bytes!r} at offset {offset}") from None


def _cstring(field_bytes: bytes) -> bytes:
    return field_bytes.split(b"\0", 1)[0]


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _parse_number(block[148:156], "checksum", 0)
    except TarFormatError:
        return False
    # The sum of a block's bytes with the checksum field counted as spaces.
    # adler32's low half is 1 + the byte sum mod 65521: exact for 256 bytes
    # (at most 65280), so two halves give the sum at C speed instead of
    # iterating over 512 ints, once per member.
    unsigned = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
    unsigned += 8 * 32 - sum(block[148:156])
    if stored == unsigned:
        return True
    signed = sum((b - 256 if b > 127 else b) for b in block[:148] + block[156:]) + 8 * 32
    return stored == signed


def parse_pax(data: bytes, offset: int) -> dict[str, bytes]:
    """Parse PAX records ``"LEN KEY=VALUE\\n"``; raise TarFormatError on a bad one."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # NUL padding after the last record
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise TarFormatError(f"bad PAX record at offset {offset + pos}")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError(f"bad PAX record length at offset {offset + pos}") from None
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise TarFormatError(f"bad PAX record at offset {offset + pos}")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise TarFormatError(f"PAX record without '=' at offset {offset + pos}")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos = end
    return records


class TarReader:
    """Turns a tar byte stream into :class:`Segment`, :class:`Member`,
    :class:`Data`, :class:`MemberEnd` and finally :class:`End` events."""

    def __init__(self) -> None:
        # Incoming chunks as given: members' data are handed out as slices of
        # them (or the chunks themselves), never copied through one big buffer.
        self._chunks: deque[bytes] = deque()
        self._head = 0  # position of the next byte in _chunks[0]
        self._avail = 0  # bytes received and not consumed yet
        self._consumed = 0  # stream offset of the next byte
        self._eof = False
        self._state = _State.HEADER
        self._pending = _Pending()
        self._remaining = 0  # bytes left in the current data or extension body
        self._padding = 0
        self._ext_kind = b""
        self._ext_body = bytearray()
        self._ext_header = b""
        self._end_clean = True
        self._queued: Member | None = None

    # -- feeding ---------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the stream; ``b""`` means the stream ended."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise TarFormatError("data received after end of stream")
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._avail += len(chunk)

    @property
    def offset(self) -> int:
        """Stream offset of the next byte to be consumed."""
        return self._consumed

    def _available(self) -> int:
        return self._avail

    def _contiguous(self, n: int) -> int:
        """How many of the next ``n`` bytes can be taken without joining chunks."""
        if not self._avail:
            return 0
        return min(n, len(self._chunks[0]) - self._head)

    def _take(self, n: int) -> bytes:
        """Consume the next ``n`` bytes (``n <= _available()``)."""
        chunks, head = self._chunks, self._head
        self._avail -= n
        self._consumed += n
        first = chunks[0]
        end = head + n
        if end < len(first):
            self._head = end
            return first[head:end]
        if end == len(first):
            chunks.popleft()
            self._head = 0
            return first if head == 0 else first[head:]
        parts = []
        while n:
            first = chunks[0]
            piece = first[head : head + n]
            parts.append(piece)
            n -= len(piece)
            head += len(piece)
            if head == len(first):
                chunks.popleft()
                head = 0
        self._head = head
        return b"".join(parts)

    # -- events ----------------------------------------------------------

    def next_event(self) -> _Event | _NeedData:
        """The next event, or :data:`NEED_DATA` until more bytes arrive.

        :raises TarFormatError: the stream is not a well-formed tar archive.
        """
        if self._queued is not None:
            event, self._queued = self._queued, None
            return event
        state = self._state
        if state is _State.DATA:
            return self._data_event()
        if state is _State.PADDING:
            return self._padding_event()
        if state is _State.EXTENSION:
            return self._extension_event()
        if state is _State.HEADER:
            return self._header_event()
        if state is _State.TRAILER:
            if self._available():
                return Segment(self._take(self._contiguous(self._avail)))
            if self._eof:
                self._state = _State.DONE
                return End(clean=self._end_clean)
            return NEED_DATA
        return NEED_DATA

    def _data_event(self) -> _Event | _NeedData:
        if self._remaining == 0:
            self._state = _State.PADDING
            return MemberEnd()
        n = self._contiguous(self._remaining)
        if n == 0:
            if self._eof:
                raise TarFormatError(
                    f"archive truncated inside member data at offset {self.offset}"
                )
            return NEED_DATA
        self._remaining -= n
        return Data(self._take(n))

    def _padding_event(self) -> _Event | _NeedData:
        if self._padding == 0:
            self._state = _State.HEADER
            return self.next_event()
        n = min(self._padding, self._available())
        if n == 0:
            if self._eof:
                raise TarFormatError(f"archive truncated inside padding at offset {self.offset}")
            return NEED_DATA
        self._padding -= n
        return Segment(self._take(n))

    def _header_event(self) -> _Event | _NeedData:
        if self._available() < BLOCK:
            if self._eof:
                if self._available() == 0 and self._pending.offset < 0:
                    # No end-of-archive blocks: tolerated (as GNU tar does), but noted.
                    self._end_clean = False
                    self._state = _State.TRAILER
                    return self.next_event()
                raise TarFormatError(f"archive truncated inside a header at offset {self.offset}")
            return NEED_DATA
        start = self.offset
        block = self._take(BLOCK)
        if block == bytes(BLOCK):
            if self._pending.offset >= 0:
                raise TarFormatError(f"extension header without a member at offset {start}")
            self._state = _State.TRAILER  # the rest (second zero block, padding) is trailer
            return Segment(block)
        if not _checksum_ok(block):
            raise TarFormatError(f"bad header checksum at offset {start}")
        if self._pending.offset < 0:
            self._pending.offset = start
        kind = block[156:157]
        if kind in (b"x", b"g", b"L", b"K"):
            size = _parse_number(block[124:136], "size", start)
            if size < 0 or size > _MAX_EXTENSION:
                raise TarFormatError(f"extension header of {size} bytes at offset {start}")
            self._ext_kind = kind
            self._ext_body = bytearray()
            self._ext_header = block
            self._remaining = size
            self._padding = (-size) % BLOCK
            self._state = _State.EXTENSION
            return Segment(block)
        if kind == b"S" or kind == b"M" or kind == b"V":
            raise TarFormatError(f"unsupported tar entry type {kind.decode()!r} at offset {start}")
        if kind not in _TYPES:
            raise TarFormatError(f"unknown tar entry type {kind!r} at offset {start}")
        header = self._build_header(block, start)
        self._pending = _Pending()
        self._remaining = header.size
        self._padding = (-header.size) % BLOCK
        self._state = _State.DATA
        self._queued = Member(header)
        return Segment(block)

    def _extension_event(self) -> _Event | _NeedData:
        if self._remaining:
            n = min(self._remaining, self._available())
            if n == 0:
                if self._eof:
                    raise TarFormatError(f"archive truncated inside an extension at {self.offset}")
                return NEED_DATA
            chunk = self._take(n)
            self._ext_body += chunk
            self._remaining -= n
            return Segment(chunk)
        if self._padding:
            n = min(self._padding, self._available())
            if n == 0:
                if self._eof:
                    raise TarFormatError(f"archive truncated inside padding at {self.offset}")
                return NEED_DATA
            self._padding -= n
            return Segment(self._take(n))
        body = bytes(self._ext_body)
        kind = self._ext_kind
        if kind == b"x":
            self._pending.pax.update(parse_pax(body, self._pending.offset))
        elif kind == b"g":
            parse_pax(body, self._pending.offset)  # validated, then ignored (global defaults)
            pending = self._pending
            if not pending.pax and pending.long_name is None and pending.long_link is None:
                pending.offset = -1
        elif kind == b"L":
            self._pending.long_name = body.split(b"\0", 1)[0]
        elif kind == b"K":
            self._pending.long_link = body.split(b"\0", 1)[0]
        self._state = _State.HEADER
        return self.next_event()

    def _build_header(self, block: bytes, start: int) -> TarHeader:
        pending = self._pending
        magic = block[257:265]
        name = _cstring(block[0:100])
        if magic[:6] == b"ustar\0":
            prefix = _cstring(block[345:500])
            if prefix:
                name = prefix + b"/" + name
        linkname = _cstring(block[157:257])
        kind = block[156:157]
        size = _parse_number(block[124:136], "size", start)
        uid = _parse_number(block[108:116], "uid", start)
        gid = _parse_number(block[116:124], "gid", start)
        mtime: float = _parse_number(block[136:148], "mtime", start)
        uname = _cstring(block[265:297]).decode("utf-8", "replace")
        gname = _cstring(block[297:329]).decode("utf-8", "replace")
        if pending.long_name is not None:
            name = pending.long_name
        if pending.long_link is not None:
            linkname = pending.long_link
        xattrs: list[tuple[str, bytes]] = []
        for key, value in pending.pax.items():
            if key == "path":
                name = value
            elif key == "linkpath":
                linkname = value
            elif key == "size":
                size = _pax_int(value, key, start)
            elif key == "uid":
                uid = _pax_int(value, key, start)
            elif key == "gid":
                gid = _pax_int(value, key, start)
            elif key == "uname":
                uname = value.decode("utf-8", "replace")
            elif key == "gname":
                gname = value.decode("utf-8", "replace")
            elif key == "mtime":
                try:
                    mtime = float(value)
                except ValueError:
                    raise TarFormatError(f"bad PAX mtime {value!r} at offset {start}") from None
            elif key.startswith("SCHILY.xattr."):
                xattrs.append((key[len("SCHILY.xattr.") :], value))
            elif key.startswith("GNU.sparse."):
                raise TarFormatError(f"GNU sparse files are not supported (offset {start})")
        ttype = _TYPES[kind]
        if kind == b"\0" and name.endswith(b"/"):
            ttype = TarType.DIRECTORY
        if size < 0:
            raise TarFormatError(f"negative size at offset {start}")
        return TarHeader(
            name=name,
            type=ttype,
            size=size if ttype not in _HEADER_ONLY else 0,
            mode=_parse_number(block[100:108], "mode", start) & 0o7777,
            uid=uid,
            gid=gid,
            mtime=mtime,
            linkname=linkname,
            uname=uname,
            gname=gname,
            devmajor=_parse_number(block[329:337], "devmajor", start)
            if ttype in (TarType.CHAR, TarType.BLOCK)
            else 0,
            devminor=_parse_number(block[337:345], "devminor", start)
            if ttype in (TarType.CHAR, TarType.BLOCK)
            else 0,
            xattrs=tuple(xattrs),
            offset=pending.offset if pending.offset >= 0 else start,
        )

    def events(self) -> list[_Event]:
        """Every event available now (a convenience for tests and simple loops)."""
        out: list[_Event] = []
        while True:
            event = self.next_event()
            if isinstance(event, _NeedData):
                return out
            out.append(event)
            if isinstance(event, End):
                return out


def _pax_int(value: bytes, key: str, offset: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise TarFormatError(f"bad PAX {key} {value!r} at offset {offset}") from None
