"""Blocking byte streams for layer blobs: hashing, decompression, async bridging."""

from __future__ import annotations

import asyncio
import bz2
import hashlib
import io
import lzma
import queue
from collections.abc import AsyncIterable
from typing import IO

from zlib_ng import zlib_ng as zlib

from crio.errors import CrioError, StorageError
from crio.storage.records import COMPRESSION_GZIP, COMPRESSION_NONE, COMPRESSION_ZSTD
from crio.storage.tarapply import LayerFormatError

__all__ = ["AsyncBridge", "DigestReader", "LayerReader", "decompress", "detect_compression"]

COMPRESSION_BZIP2 = 1
COMPRESSION_XZ = 3
_CHUNK = 1 << 20


class DigestReader(io.RawIOBase):
    """Reads through ``raw`` while hashing (sha256) and counting what passes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self._raw.read(n if n and n > 0 else _CHUNK)
        if data:
            self._hash.update(data)
            self.size += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _Prepend(io.RawIOBase):
    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._raw.read(n if n and n > 0 else _CHUNK)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Gunzip(io.RawIOBase):
    """gzip, including several concatenated members (pigz, some registries)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._in_member = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        n = n if n and n > 0 else _CHUNK
        while True:
            if not self._pending:
                data = self._raw.read(_CHUNK)
                if not data:
                    if self._in_member:
                        raise LayerFormatError("gzip layer ended before its end marker")
                    return b""
                self._pending = data
            if not self._in_member:
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._in_member = True
            try:
                out = self._z.decompress(self._pending, n)
            except zlib.error as exc:
                raise LayerFormatError(f"gzip layer is corrupt: {exc}") from None
            self._pending = self._z.unconsumed_tail
            if self._z.eof:
                self._pending = self._z.unused_data + self._pending
                self._in_member = False
            if out:
                return out

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def detect_compression(head: bytes) -> int:
    """containers/storage's compression number for a blob's first bytes."""
    if head.startswith(b"\x1f\x8b"):
        return COMPRESSION_GZIP
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return COMPRESSION_ZSTD
    if head.startswith(b"BZh"):
        return COMPRESSION_BZIP2
    if head.startswith(b"\xfd7zXZ\x00"):
        return COMPRESSION_XZ
    return COMPRESSION_NONE


def decompress(raw: IO[bytes]) -> tuple[IO[bytes], int]:
    """Wrap ``raw`` so that reads return the uncompressed tar; also say which compression."""
    head = raw.read(_CHUNK)
    kind = detect_compression(head)
    source = _Prepend(head, raw)
    if kind == COMPRESSION_GZIP:
        return _Gunzip(source), kind  # type: ignore[return-value]
    if kind == COMPRESSION_ZSTD:
        import zstandard  # loaded by the first zstd layer

        reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
        return reader, kind  # type: ignore[return-value]
    if kind == COMPRESSION_BZIP2:
        return bz2.BZ2File(source), kind  # type: ignore[return-value]
    if kind == COMPRESSION_XZ:
        return lzma.LZMAFile(source), kind  # type: ignore[return-value]
    return source, kind  # type: ignore[return-value]


class AsyncBridge(io.RawIOBase):
    """A blocking reader fed from an async iterator (run :meth:`pump` on the loop)."""

    def __init__(self, maxsize: int = 16) -> None:
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize)
        self._rest = b""
        self._done = False
        self._closed = False

    def readable(self) -> bool:
        return True

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._closed:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        """The reader gave up: let a blocked :meth:`pump` finish."""
        self._closed = True

    async def pump(self, source: AsyncIterable[bytes]) -> None:
        """Move ``source`` into the queue; ends it with None or the source's error."""
        try:
            async for chunk in source:
                if self._closed:
                    return
                if chunk:
                    await asyncio.to_thread(self._put, bytes(chunk))
        except BaseException as exc:
            await asyncio.to_thread(self._put, exc)
            raise
        await asyncio.to_thread(self._put, None)

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._rest:
            data = self._rest if n is None or n < 0 else self._rest[:n]
            self._rest = self._rest[len(data) :]
            return data
        if self._done:
            return b""
        item = self._queue.get()
        if item is None:
            self._done = True
            return b""
        if isinstance(item, BaseException):
            self._done = True
            if isinstance(item, CrioError):
                raise item  # e.g. the puller's digest check: keep its class (and status)
            raise StorageError(f"reading the layer blob failed: {item}") from item
        if n is not None and 0 < n < len(item):
            self._rest = item[n:]
            return item[:n]
        return item

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class LayerReader(io.RawIOBase):
    """The uncompressed tar of a layer blob, hashing both sides as it is read.

    Everything blocking (detecting the compression included) happens in
    :meth:`read`, so the reader can be built on the event loop and read in a
    thread. After the last read, ``compressed_digest``/``compressed_size``
    describe the blob and ``diff_digest``/``diff_size`` the tar.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._outer = DigestReader(raw)
        self._inner: DigestReader | None = None
        self.compression = COMPRESSION_NONE

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._inner is None:
            source, self.compression = decompress(self._outer)
            self._inner = DigestReader(source)
        return self._inner.read(n)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    @property
    def compressed_digest(self) -> str:
        return self._outer.digest

    @property
    def compressed_size(self) -> int:
        return self._outer.size

    @property
    def diff_digest(self) -> str:
        return self._inner.digest if self._inner else self._outer.digest

    @property
    def diff_size(self) -> int:
        return self._inner.size if self._inner else 0
