"""The layer byte pipeline: bounded buffers, errors carried across threads, clean stops."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crio.errors import InvalidRequestError, StorageError
from crio.image.digest import DigestMismatchError
from crio.storage import Store
from crio.storage._streams import (
    CHANNEL_LIMIT,
    CHUNK,
    READ_AHEAD,
    BlobChannel,
    LayerReader,
    ReadAhead,
    StreamClosedError,
)
from support.images import digest, gzip_bytes, layer_tar

PIECE = 64 << 10


async def _pieces(data: bytes, error: BaseException | None = None) -> AsyncIterator[bytes]:
    for at in range(0, len(data), PIECE):
        yield data[at : at + PIECE]
    if error is not None:
        raise error


async def _until(condition) -> None:  # type: ignore[no-untyped-def]
    """Let the loop run until ``condition()`` holds (no clock involved)."""
    while not condition():
        await asyncio.sleep(0)


def _read_all(reader: io.RawIOBase, size: int = CHUNK) -> bytes:
    parts = []
    while chunk := reader.read(size):
        parts.append(chunk)
    return b"".join(parts)


def test_channel_holds_at_most_its_limit_while_the_reader_lags() -> None:
    data = bytes(range(256)) * (5 * CHANNEL_LIMIT // 256)

    async def go() -> bytes:
        channel = BlobChannel()
        pump = asyncio.ensure_future(channel.pump(_pieces(data)))
        # The reader has not started: the pump fills the channel, then waits for room.
        await _until(lambda: channel._room is not None)
        assert not pump.done() and channel.high_water <= CHANNEL_LIMIT
        got = await asyncio.to_thread(_read_all, channel)
        await pump
        assert channel.high_water <= CHANNEL_LIMIT
        return got

    assert asyncio.run(go()) == data


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DigestMismatchError("layer blob sha256:ab: digest mismatch"), DigestMismatchError),
        (ConnectionResetError("peer went away"), StorageError),
    ],
)
def test_channel_hands_the_source_error_to_the_reader(
    error: BaseException, expected: type[Exception]
) -> None:
    async def go() -> None:
        channel = BlobChannel()
        pump = asyncio.ensure_future(channel.pump(_pieces(b"x" * 300_000, error)))
        with pytest.raises(expected):
            await asyncio.to_thread(_read_all, channel)
        with pytest.raises(type(error)):
            await pump

    asyncio.run(go())


def test_a_reader_that_gives_up_releases_the_pump() -> None:
    async def go() -> None:
        channel = BlobChannel()
        pump = asyncio.ensure_future(channel.pump(_pieces(b"y" * (4 * CHANNEL_LIMIT))))
        await _until(lambda: channel._room is not None)
        await asyncio.to_thread(channel.close)
        await pump  # returns: the rest of the source is not read

    asyncio.run(go())


def test_closing_a_channel_fails_a_waiting_reader() -> None:
    async def go() -> None:
        channel = BlobChannel()  # no pump: no byte ever comes
        reading = asyncio.ensure_future(asyncio.to_thread(channel.read, CHUNK))
        await asyncio.to_thread(_waiting_on, channel._cond)
        channel.close()
        with pytest.raises(StreamClosedError):
            await reading

    asyncio.run(go())


def test_stopping_a_read_ahead_fails_its_reader_in_another_thread() -> None:
    """A cancelled pull stops the stream while its applying thread waits for bytes that
    never come (the pump was cancelled before it ran): that thread must fail, not hang."""

    async def go() -> None:
        channel = BlobChannel()
        ahead = ReadAhead(LayerReader(channel))
        reading = asyncio.ensure_future(asyncio.to_thread(ahead.read, CHUNK))
        await asyncio.to_thread(_waiting_on, ahead._cond)
        ahead.stop()
        with pytest.raises(StreamClosedError):
            await reading
        await asyncio.to_thread(ahead.close)  # the inflating thread ends too
        assert ahead._thread is not None and not ahead._thread.is_alive()

    asyncio.run(go())


def _waiting_on(cond: threading.Condition) -> None:
    """Return once some thread waits on ``cond`` (its waiter list is not empty)."""
    while True:
        with cond:
            if cond._waiters:  # type: ignore[attr-defined]
                return
        time.sleep(0.001)


def test_read_ahead_stays_within_its_depth_and_stops_on_close() -> None:
    tar = layer_tar({f"f{i}": bytes([i]) * 200_000 for i in range(20)})
    ahead = ReadAhead(LayerReader(io.BytesIO(gzip_bytes(tar))))
    assert ahead.read(10) == tar[:10]  # starts the inflating thread
    thread = ahead._thread
    assert thread is not None
    with ahead._cond:  # the thread fills the queue, then must wait for the reader
        assert ahead._cond.wait_for(lambda: len(ahead._chunks) >= READ_AHEAD, timeout=60)
    assert ahead.high_water == READ_AHEAD
    ahead.close()
    assert not thread.is_alive()


def test_read_ahead_reads_everything_and_keeps_the_digests() -> None:
    tar = layer_tar({f"d/f{i}": bytes([i]) * 50_000 for i in range(30)})
    blob = gzip_bytes(tar)
    ahead = ReadAhead(LayerReader(io.BytesIO(blob)))
    assert _read_all(ahead, 1 << 20) == tar
    ahead.close()
    assert (ahead.diff_digest, ahead.diff_size) == (digest(tar), len(tar))
    assert (ahead.compressed_digest, ahead.compressed_size) == (digest(blob), len(blob))


def test_read_ahead_raises_the_inflating_error_in_order() -> None:
    blob = bytearray(gzip_bytes(layer_tar({"a": b"z" * 400_000})))
    blob[len(blob) // 2] ^= 0xFF
    ahead = ReadAhead(LayerReader(io.BytesIO(bytes(blob))))
    with pytest.raises(InvalidRequestError, match="gzip"):
        _read_all(ahead)
    ahead.close()


def test_applying_a_large_streamed_layer_holds_little_memory(tmp_path: Path) -> None:
    """The whole way from the loop to the files keeps a few MiB, not the blob."""
    # A plain tar of 24 MB (compressed, these bytes would shrink to nothing).
    blob = layer_tar({f"big/{i}": bytes([i]) * 2_000_000 for i in range(12)})
    diff = digest(blob)

    async def go() -> int:
        store = await Store.open(tmp_path / "root", tmp_path / "run", "vfs")
        try:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            layer = await store.put_layer(_pieces(blob), diff_digest=diff)
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            assert layer.diff_digest == diff
            return peak
        finally:
            await store.close()

    peak = asyncio.run(go())
    # The channel (1 MiB) + the read-ahead queue (4 x 128 KiB) + the chunks being
    # hashed, parsed and written: about 2 MiB for a 24 MB layer (an unbounded
    # channel makes this ~20 MB).
    assert peak < 3 << 20, peak
