"""Compression detection and streaming decompression, whole and a byte at a time."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os

import pytest
import zstandard

from crio.image import compression as c

DATA = os.urandom(3000) + b"x" * 100_000


def _feed(dec: c.Decompressor, blob: bytes, step: int) -> bytes:
    out = b"".join(dec.feed(blob[i : i + step]) for i in range(0, len(blob), step))
    return out + dec.finish()


CASES = [
    (c.Compression.GZIP, gzip.compress(DATA[:50_000]) + gzip.compress(DATA[50_000:])),
    (
        c.Compression.ZSTD,
        zstandard.ZstdCompressor().compress(DATA[:1000])
        + zstandard.ZstdCompressor().compress(DATA[1000:]),
    ),
    (c.Compression.BZIP2, bz2.compress(DATA)),
    (c.Compression.XZ, lzma.compress(DATA)),
    (c.Compression.NONE, DATA),
]


@pytest.mark.parametrize(("kind", "blob"), CASES, ids=[k.value for k, _ in CASES])
@pytest.mark.parametrize("step", [1 << 20, 4096, 1])
def test_round_trip_including_multiple_members(kind: c.Compression, blob: bytes, step: int) -> None:
    # Byte-wise runs of big blobs use 7-byte steps: quick, and still split every header.
    blob_step = 7 if step == 1 and len(blob) > 20_000 and kind is not c.Compression.NONE else step
    assert c.detect(blob[: c.MAGIC_LENGTH]) is kind
    assert _feed(c.decompressor(kind), blob, blob_step) == DATA


@pytest.mark.parametrize("kind", [c.Compression.GZIP, c.Compression.ZSTD])
def test_compressors_produce_what_decompressors_read(kind: c.Compression) -> None:
    comp = c.compressor(kind)
    blob = b"".join(comp.feed(DATA[i : i + 999]) for i in range(0, len(DATA), 999)) + comp.finish()
    assert c.detect(blob) is kind
    assert _feed(c.decompressor(kind), blob, 1 << 16) == DATA


@pytest.mark.parametrize("kind", [c.Compression.GZIP, c.Compression.ZSTD])
def test_truncated_and_corrupt_streams_fail(kind: c.Compression) -> None:
    # (zstd frames carry a checksum only when asked; the layer digest covers the rest)
    zstd = zstandard.ZstdCompressor(write_checksum=True)
    blob = gzip.compress(DATA) if kind is c.Compression.GZIP else zstd.compress(DATA)
    with pytest.raises(c.CompressionError, match=kind.value):
        _feed(c.decompressor(kind), blob[: len(blob) // 2], 1000)
    corrupt = bytearray(blob)
    corrupt[len(blob) // 2] ^= 0xFF
    corrupt[len(blob) // 2 + 1] ^= 0xFF
    with pytest.raises(c.CompressionError):
        _feed(c.decompressor(kind), bytes(corrupt), 1000)
