"""CRI log records for a pod VM's containers, written on the host (pure encoder).

conmon's format: ``TIMESTAMP STREAM TAG CONTENT\\n``; TIMESTAMP is RFC 3339
with nine fractional digits and a numeric offset, TAG is ``F`` for a full
line and ``P`` for a piece of one that goes on in the next record. Like
conmon, nothing is held back: a chunk's complete lines become ``F`` records
and its tail a ``P`` record, so a crash loses nothing already received.
"""

from __future__ import annotations

import time

__all__ = ["encode_chunk", "rfc3339_nano"]


def rfc3339_nano(ns: int, utc_offset_seconds: int | None = None) -> bytes:
    """``2024-05-01T12:00:00.123456789+02:00`` for ``ns`` since the epoch (local time)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    if utc_offset_seconds is None:
        utc_offset_seconds = time.localtime(seconds).tm_gmtoff
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds + utc_offset_seconds))
    sign = "+" if utc_offset_seconds >= 0 else "-"
    hours, minutes = divmod(abs(utc_offset_seconds) // 60, 60)
    return f"{stamp}.{fraction:09d}{sign}{hours:02d}:{minutes:02d}".encode()


def encode_chunk(
    stream: str, data: bytes, now_ns: int, utc_offset_seconds: int | None = None
) -> bytes:
    """The records for one chunk a container wrote on ``stream`` ("stdout" or "stderr")."""
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"stream must be stdout or stderr, not {stream!r}")
    if not data:
        return b""
    prefix = rfc3339_nano(now_ns, utc_offset_seconds) + b" " + stream.encode() + b" "
    lines = data.split(b"\n")
    out = [prefix + b"F " + line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(prefix + b"P " + lines[-1] + b"\n")
    return b"".join(out)
