"""tar-split metadata: rebuild a layer's original tar byte for byte.

containers/storage keeps, next to each layer applied from a tar, a file
``overlay-layers/ID.tar-split.gz``: gzip-compressed JSON lines, one entry
per line, in vbatts/tar-split's format::

    {"type":2,"payload":"<base64 raw bytes>","position":0}        segment
    {"type":1,"name":"bin/sh","size":0,"payload":null,"position":1}  file

Segments hold every byte of the archive that is not file content (headers,
padding, end-of-archive blocks); file entries name a member whose content
is read back from the layer's files, with the CRC-64 (ISO polynomial, as
Go's ``hash/crc64``) of that content as payload. skopeo and podman use it
to hand out a layer whose digest equals the ``diff-digest`` recorded at
pull time; without it they would generate a new tar with another digest.

:class:`TarSplitWriter` is pure (events in, bytes out); :func:`assemble`
takes a callable that opens a member's content.
"""

from __future__ import annotations

import base64
import json
import posixpath
from collections.abc import Callable, Iterator
from typing import IO

import fastcrc

from crio.storage.tarstream import Data, End, Member, MemberEnd, Segment

__all__ = ["Crc64", "TarSplitError", "TarSplitWriter", "assemble", "crc64_iso"]

SEGMENT = 2
FILE = 1


class TarSplitError(ValueError):
    """tar-split metadata is malformed or does not match the files."""


class Crc64:
    """A running CRC-64/GO-ISO (Go's ``crc64.MakeTable(crc64.ISO)``).

    fastcrc computes it at ~0.15 ns a byte and releases the GIL, so the
    checksum costs little next to hashing and inflating the layer.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: int | None = None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.value = fastcrc.crc64.go_iso(data, self.value)

    def digest(self) -> bytes:
        """The checksum, big-endian, as Go's ``hash.Hash64.Sum`` writes it."""
        return (0 if self.value is None else self.value).to_bytes(8, "big")


def crc64_iso() -> Crc64:
    """A fresh CRC-64/GO-ISO; ``digest()`` is big-endian."""
    return Crc64()


#: JSON string literal with non-ASCII escaped, as ``json.dumps`` writes it (C speed).
_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


class TarSplitWriter:
    """Collects tar-split entries from :mod:`crio.storage.tarstream` events.

    ``duplicate`` becomes True when a path occurs twice: tar-split readers
    refuse such metadata, so the caller should not store it.
    """

    def __init__(self) -> None:
        self._out = bytearray()
        self._segment = bytearray()
        self._position = 0
        self._crc: Crc64 | None = None
        self._member: Member | None = None
        self._seen: set[str] = set()
        self.duplicate = False

    def feed(self, event: object) -> None:
        # Dispatch on the exact class: this runs for every event of every layer.
        kind = type(event)
        if kind is Data:
            if self._crc is not None:
                self._crc.update(event.data)  # type: ignore[attr-defined]
        elif kind is Segment:
            self._segment += event.data  # type: ignore[attr-defined]
        elif kind is Member:
            self._flush_segment()
            self._member = event  # type: ignore[assignment]
            self._crc = crc64_iso() if event.header.size > 0 else None  # type: ignore[attr-defined]
        elif kind is MemberEnd:
            self._end_member()
        elif kind is End:
            self._flush_segment(force=True)

    def _end_member(self) -> None:
        assert self._member is not None
        header = self._member.header
        # Written by hand, byte for byte what json.dumps would write (ensure_ascii):
        # one line per member is the hot path of tar-split.
        try:
            name = header.name.decode("utf-8")
            field = b'"name":' + _json_string(name).encode()
        except UnicodeDecodeError:
            name = header.name.decode("utf-8", "surrogateescape")
            field = b'"name_raw":"' + base64.b64encode(header.name) + b'"'
        key = posixpath.normpath(name) if name else "."
        if key in self._seen:
            self.duplicate = True
        self._seen.add(key)
        size = b',"size":%d' % header.size if header.size else b""
        payload = (
            b'"' + base64.b64encode(self._crc.digest()) + b'"' if self._crc is not None else b"null"
        )
        self._out += b'{"type":1,%s%s,"payload":%s,"position":%d}\n' % (
            field,
            size,
            payload,
            self._position,
        )
        self._position += 1
        self._member, self._crc = None, None

    def _flush_segment(self, force: bool = False) -> None:
        if self._segment or force:
            # Formatted by hand (base64 needs no JSON escaping): one per member, on the hot path.
            payload = base64.b64encode(self._segment)
            self._out += b'{"type":2,"payload":"%s","position":%d}\n' % (payload, self._position)
            self._position += 1
            self._segment = bytearray()

    def getvalue(self) -> bytes:
        """The JSON lines written so far (gzip them for the ``.tar-split.gz`` file)."""
        return bytes(self._out)


def assemble(
    lines: bytes, open_member: Callable[[bytes], IO[bytes]], chunk: int = 1 << 20
) -> Iterator[bytes]:
    """Yield the original tar stream from tar-split ``lines`` and the layer's files.

    :param open_member: opens a member's content by its archive name (bytes).
    :raises TarSplitError: a malformed line, a short file or a CRC mismatch.
    """
    for number, raw in enumerate(lines.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            kind = entry["type"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TarSplitError(f"tar-split line {number} is malformed: {exc}") from None
        if kind == SEGMENT:
            payload = entry.get("payload")
            if payload:
                yield base64.b64decode(payload)
            continue
        if kind != FILE:
            raise TarSplitError(f"tar-split line {number} has unknown type {kind!r}")
        size = int(entry.get("size") or 0)
        if size == 0:
            continue
        if entry.get("name_raw"):
            name = base64.b64decode(entry["name_raw"])
        else:
            name = str(entry.get("name", "")).encode("utf-8", "surrogateescape")
        crc = crc64_iso()
        left = size
        with open_member(name) as handle:
            while left:
                data = handle.read(min(chunk, left))
                if not data:
                    raise TarSplitError(f"layer file {name!r} is shorter than its {size} bytes")
                crc.update(data)
                left -= len(data)
                yield data
        expected = entry.get("payload")
        if expected and base64.b64decode(expected) != crc.digest():
            raise TarSplitError(f"layer file {name!r} changed since the layer was applied")
