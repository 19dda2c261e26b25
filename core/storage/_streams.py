"""Blocking byte streams for layer blobs: a bounded channel from the event loop,
hashing, decompression and a read-ahead thread.

A layer blob arriving from a registry goes, per layer::

    event loop --BlobChannel (<= CHANNEL_LIMIT bytes)--> inflating thread:
        sha256 of the blob, gunzip/unzstd, sha256 of the tar
    --ReadAhead (<= READ_AHEAD chunks of <= CHUNK bytes)--> applying thread:
        tar parsing, files, tar-split

Every buffer on the way has a bound, so a layer being applied holds about
``CHANNEL_LIMIT + (READ_AHEAD + 3) * CHUNK`` bytes (under 2 MiB) in these
buffers, whatever its size. Hashing and inflating release the GIL, so the
two threads of one layer run on two cores.
"""

from __future__ import annotations

import asyncio
import bz2
import hashlib
import io
import lzma
import threading
from collections import deque
from collections.abc import AsyncIterable
from typing import IO

from zlib_ng import zlib_ng as zlib

from crio.errors import CrioError, StorageError
from crio.storage.records import COMPRESSION_GZIP, COMPRESSION_NONE, COMPRESSION_ZSTD
from crio.storage.tarapply import LayerFormatError

__all__ = [
    "CHANNEL_LIMIT",
    "CHUNK",
    "READ_AHEAD",
    "BlobChannel",
    "DigestReader",
    "LayerReader",
    "ReadAhead",
    "decompress",
    "detect_compression",
]

COMPRESSION_BZIP2 = 1
COMPRESSION_XZ = 3
#: The unit of work: bytes read, inflated and handed on at once. Large enough
#: that per-chunk Python costs vanish; under the daemon's 256 KiB mmap
#: threshold (crio._memory), so the buffers are reused from the heap instead
#: of being mapped, faulted in and unmapped each time.
CHUNK = 128 << 10
#: Bytes of one blob queued between the event loop and its reader thread.
CHANNEL_LIMIT = 1 << 20
#: Inflated chunks queued between a layer's inflating and applying threads.
READ_AHEAD = 4


class _Reader(io.RawIOBase):
    """A RawIOBase whose subclasses implement ``read`` only."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class DigestReader(_Reader):
    """Reads through ``raw`` while hashing (sha256) and counting what passes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self._raw.read(n if n and n > 0 else CHUNK)
        if data:
            self._hash.update(data)
            self.size += len(data)
        return data

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _Prepend(_Reader):
    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._raw.read(n if n and n > 0 else CHUNK)


class _Gunzip(_Reader):
    """gzip, including several concatenated members (pigz, some registries).

    Each read inflates at most ``n`` bytes (``max_length``): a small blob
    that inflates to gigabytes is never held in memory at once.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._in_member = False

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        n = n if n and n > 0 else CHUNK
        while True:
            if not self._pending:
                data = self._raw.read(CHUNK)
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
    head = raw.read(CHUNK)
    kind = detect_compression(head)
    source = _Prepend(head, raw)
    if kind == COMPRESSION_GZIP:
        return _Gunzip(source), kind  # type: ignore[return-value]
    if kind == COMPRESSION_ZSTD:
        import zstandard  # loaded by the first zstd layer

        reader = zstandard.ZstdDecompressor().stream_reader(
            source, read_size=CHUNK, read_across_frames=True
        )
        return reader, kind  # type: ignore[return-value]
    if kind == COMPRESSION_BZIP2:
        return bz2.BZ2File(source), kind  # type: ignore[return-value]
    if kind == COMPRESSION_XZ:
        return lzma.LZMAFile(source), kind  # type: ignore[return-value]
    return source, kind  # type: ignore[return-value]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class StreamClosedError(StorageError):
    """A layer stream was closed while a thread still read it (its apply was given up)."""


def _reader_error(item: BaseException) -> CrioError:
    if isinstance(item, CrioError):
        return item  # e.g. the puller's digest check: keep its class (and status)
    error = StorageError(f"reading the layer blob failed: {item}")
    error.__cause__ = item
    return error


class BlobChannel(_Reader):
    """Bytes from the event loop (:meth:`put`, :meth:`pump`) to a blocking reader thread.

    At most ``limit`` bytes wait in the channel (one chunk may be larger on
    its own): :meth:`put` waits for room without blocking the loop, and the
    reader wakes it once it took enough. Build it on the event loop.
    """

    def __init__(self, limit: int = CHANNEL_LIMIT) -> None:
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._done = False
        self._error: BaseException | None = None
        self._gone = False
        self._room: asyncio.Future[None] | None = None
        #: The most bytes ever queued at once (the bound, seen from outside).
        self.high_water = 0

    async def put(self, chunk: bytes) -> bool:
        """Queue ``chunk``, waiting while the channel is full; False: the reader left."""
        while True:
            with self._cond:
                if self._gone:
                    return False
                if self._queued == 0 or self._queued + len(chunk) <= self._limit:
                    self._chunks.append(chunk)
                    self._queued += len(chunk)
                    self.high_water = max(self.high_water, self._queued)
                    self._cond.notify()
                    return True
                room = self._room = self._loop.create_future()
            await room

    def finish(self, error: BaseException | None = None) -> None:
        """No more bytes; the reader then sees the end, or ``error`` raised."""
        with self._cond:
            self._done = True
            self._error = error
            self._cond.notify()

    async def pump(self, source: AsyncIterable[bytes]) -> None:
        """Move ``source`` into the channel, then :meth:`finish` it (with its error)."""
        try:
            async for chunk in source:
                if chunk and not await self.put(bytes(chunk)):
                    return
        except BaseException as exc:
            self.finish(exc)
            raise
        self.finish()

    def close(self) -> None:
        """The reader gives up: drop what is queued and let :meth:`put` return.

        A read waiting meanwhile (another thread) wakes and raises: the bytes that
        never came are not an end of the blob.
        """
        with self._cond:
            self._gone = True
            self._chunks.clear()
            self._queued = 0
            room, self._room = self._room, None
            self._cond.notify_all()
        if room is not None:
            self._loop.call_soon_threadsafe(_wake, room)
        super().close()

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        n = n if n and n > 0 else CHUNK
        with self._cond:
            while not self._chunks and not self._done and not self._gone:
                self._cond.wait()
            if self._gone:
                raise StreamClosedError("the layer blob's channel was closed before its end")
            if not self._chunks:
                if self._error is not None:
                    raise _reader_error(self._error)
                return b""
            parts, size = [], 0
            while self._chunks and size < n:
                chunk = self._chunks.popleft()
                if size + len(chunk) > n:
                    self._chunks.appendleft(chunk[n - size :])
                    chunk = chunk[: n - size]
                parts.append(chunk)
                size += len(chunk)
            self._queued -= size
            room = self._room
            if room is not None and self._queued <= self._limit // 2:
                self._room = None
                self._loop.call_soon_threadsafe(_wake, room)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class LayerReader(_Reader):
    """The uncompressed tar of a layer blob, hashing both sides as it is read.

    Everything blocking (detecting the compression included) happens in
    :meth:`read`, so the reader can be built on the event loop and read in a
    thread. After the last read, ``compressed_digest``/``compressed_size``
    describe the blob and ``diff_digest``/``diff_size`` the tar.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._outer = DigestReader(raw)
        self._inner: DigestReader | None = None
        self.compression = COMPRESSION_NONE

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._inner is None:
            source, self.compression = decompress(self._outer)
            self._inner = DigestReader(source)
        return self._inner.read(n)

    def close(self) -> None:
        if isinstance(self._raw, BlobChannel):
            self._raw.close()
        super().close()

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


class ReadAhead(_Reader):
    """Reads ``source`` in a thread of its own, up to ``depth`` chunks ahead.

    The layer's applying thread (GIL-bound tar parsing and file creation)
    then overlaps with its inflating thread (hashing and inflating, which
    release the GIL). Errors of ``source`` are raised by :meth:`read` in
    order. :meth:`close` stops the thread and waits for it.
    """

    def __init__(self, source: LayerReader, depth: int = READ_AHEAD) -> None:
        self.source = source
        self._depth = depth
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[bytes | BaseException | None] = deque()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._rest = b""
        self._ended = False
        #: The most chunks ever queued at once (the bound, seen from outside).
        self.high_water = 0

    def _run(self) -> None:
        try:
            while True:
                data = self.source.read(CHUNK)
                with self._cond:
                    while len(self._chunks) >= self._depth and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    self._chunks.append(data or None)
                    self.high_water = max(self.high_water, len(self._chunks))
                    self._cond.notify_all()
                if not data:
                    return
        except BaseException as exc:  # handed to the reader, raised there
            with self._cond:
                self._chunks.append(exc)
                self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._rest:
            data = self._rest if n is None or n < 0 else self._rest[:n]
            self._rest = self._rest[len(data) :]
            return data
        if self._ended:
            return b""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="layer-inflate", daemon=True)
            self._thread.start()
        with self._cond:
            while not self._chunks and not self._stop:
                self._cond.wait()
            if self._stop:
                # Closed under a reader in another thread (an apply cancelled with
                # its pull): it must fail now, not wait for chunks that never come.
                raise StreamClosedError("the layer stream was closed before its end")
            item = self._chunks.popleft()
            self._cond.notify_all()
        if item is None:
            self._ended = True
            return b""
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if n is not None and 0 < n < len(item):
            self._rest = item[n:]
            return item[:n]
        return item

    def stop(self) -> None:
        """Make every read fail from now on, without waiting (safe from any thread)."""
        with self._cond:
            self._stop = True
            self._chunks.clear()
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()
        self.source.close()  # wakes a thread waiting for blob bytes
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        super().close()

    # The digests are final once read() returned b"" (the thread has ended).
    @property
    def compression(self) -> int:
        return self.source.compression

    @property
    def compressed_digest(self) -> str:
        return self.source.compressed_digest

    @property
    def compressed_size(self) -> int:
        return self.source.compressed_size

    @property
    def diff_digest(self) -> str:
        return self.source.diff_digest

    @property
    def diff_size(self) -> int:
        return self.source.diff_size
