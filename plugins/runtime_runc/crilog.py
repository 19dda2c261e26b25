"""The CRI log format conmon writes: ``TIMESTAMP STREAM TAG CONTENT\\n`` (sans-I/O).

``TAG`` is ``F`` for a full line (a newline followed the content) or ``P``
for a partial one (the content goes on in the next record of that stream).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LogRecord", "parse_records", "split_streams"]


@dataclass(frozen=True, slots=True)
class LogRecord:
    timestamp: bytes
    stream: str
    partial: bool
    content: bytes


def parse_records(data: bytes) -> list[LogRecord]:
    """Every well-formed record of ``data``; a truncated last line is ignored."""
    records = []
    for line in data.split(b"\n")[:-1]:
        parts = line.split(b" ", 3)
        if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
            continue
        content = parts[3] if len(parts) == 4 else b""
        records.append(LogRecord(parts[0], parts[1].decode(), parts[2] == b"P", content))
    return records


def split_streams(data: bytes) -> tuple[bytes, bytes]:
    """(stdout, stderr) as the process wrote them, newlines restored."""
    out = {"stdout": bytearray(), "stderr": bytearray()}
    for record in parse_records(data):
        buffer = out[record.stream]
        buffer += record.content
        if not record.partial:
            buffer += b"\n"
    return bytes(out["stdout"]), bytes(out["stderr"])
