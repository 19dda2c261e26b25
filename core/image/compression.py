"""Layer compression: detection by magic bytes, streaming (de)compressors (sans-I/O).

Layers arrive gzip- or zstd-compressed or as plain tar; the manifest's media
type says which, but like containers/image we trust the bytes: the first few
of a blob decide. Both gzip and zstd streams may hold several members or
frames one after another; the decompressors below read them all.
"""

from __future__ import annotations

import bz2
import enum
import lzma
from typing import Protocol

from zlib_ng import zlib_ng as zlib

from crio.errors import CrioError

__all__ = [
    "Compression",
    "CompressionError",
    "Compressor",
    "Decompressor",
    "compressor",
    "decompressor",
    "detect",
]


class CompressionError(CrioError):
    """A layer's bytes are not valid in the compression they claim."""


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    BZIP2 = "bzip2"
    XZ = "xz"


_MAGIC: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b\x08", Compression.GZIP),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
    (b"BZh", Compression.BZIP2),
    (b"\xfd7zXZ\x00", Compression.XZ),
)
#: Bytes :func:`detect` needs to decide.
MAGIC_LENGTH = 6


def detect(head: bytes) -> Compression:
    """The compression of a stream starting with ``head`` (at least :data:`MAGIC_LENGTH` bytes)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return Compression.NONE


class Decompressor(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class _Plain:
    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _Gzip:
    """All gzip members of a stream, as ``gzip -d`` reads them."""

    def __init__(self) -> None:
        self._obj = zlib.decompressobj(wbits=31)
        self._seen = False

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            try:
                out.append(self._obj.decompress(data))
            except zlib.error as exc:
                raise CompressionError(f"gzip: {exc}") from None
            self._seen = True
            if not self._obj.eof:
                break
            data = self._obj.unused_data
            self._obj = zlib.decompressobj(wbits=31)
            self._seen = False
            if data.strip(b"\x00") == b"":  # trailing padding after the last member
                break
        return b"".join(out)

    def finish(self) -> bytes:
        if self._seen and not self._obj.eof:
            raise CompressionError("gzip: stream ends before its end marker")
        return b""


class _Zstd:
    def __init__(self) -> None:
        import zstandard  # loaded by the first zstd layer

        self._zstd_error = zstandard.ZstdError
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._pending = False

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            try:
                out.append(self._obj.decompress(data))
            except self._zstd_error as exc:
                raise CompressionError(f"zstd: {exc}") from None
            self._pending = not self._obj.eof
            if not self._obj.eof:
                break
            data = self._obj.unused_data
            self._obj = self._dctx.decompressobj()
            self._pending = False
        return b"".join(out)

    def finish(self) -> bytes:
        if self._pending:
            raise CompressionError("zstd: stream ends inside a frame")
        return b""


class _Stdlib:
    def __init__(self, obj: bz2.BZ2Decompressor | lzma.LZMADecompressor, name: str) -> None:
        self._obj, self._name = obj, name

    def feed(self, data: bytes) -> bytes:
        try:
            return self._obj.decompress(data)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise CompressionError(f"{self._name}: {exc}") from None

    def finish(self) -> bytes:
        if not self._obj.eof:
            raise CompressionError(f"{self._name}: stream ends early")
        return b""


def decompressor(kind: Compression) -> Decompressor:
    if kind is Compression.GZIP:
        return _Gzip()
    if kind is Compression.ZSTD:
        return _Zstd()
    if kind is Compression.BZIP2:
        return _Stdlib(bz2.BZ2Decompressor(), "bzip2")
    if kind is Compression.XZ:
        return _Stdlib(lzma.LZMADecompressor(), "xz")
    return _Plain()


class Compressor(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class _GzipOut:
    def __init__(self, level: int) -> None:
        self._obj = zlib.compressobj(level, zlib.DEFLATED, 31)

    def feed(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush()


class _ZstdOut:
    def __init__(self, level: int) -> None:
        import zstandard

        self._obj = zstandard.ZstdCompressor(level=level).compressobj()

    def feed(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush()


def compressor(kind: Compression, level: int | None = None) -> Compressor:
    """A streaming compressor; gzip defaults to level 6 (as Go's), zstd to 3."""
    if kind is Compression.GZIP:
        return _GzipOut(6 if level is None else level)
    if kind is Compression.ZSTD:
        return _ZstdOut(3 if level is None else level)
    if kind is Compression.NONE:
        return _Plain()
    raise CompressionError(f"cannot compress with {kind.value}")
