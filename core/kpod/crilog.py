"""The CRI container log format, read back (sans-I/O): ``TIMESTAMP STREAM TAG CONTENT\\n``.

``TAG`` is ``F`` when a newline ended the content, ``P`` when the line goes
on in the stream's next record (conmon splits long lines). :class:`LineJoiner`
joins partial records per stream into whole lines, stamped with the time of
their first piece, as ``kubectl logs`` shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LineJoiner", "LogLine", "parse_line", "parse_timestamp"]

_TIME = re.compile(
    rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$"
)


@dataclass(frozen=True, slots=True)
class LogLine:
    timestamp: bytes  # kept verbatim: nanoseconds and the offset as conmon wrote them
    stream: str  # "stdout" or "stderr"
    partial: bool
    content: bytes


def parse_line(line: bytes) -> LogLine | None:
    """One record (without its newline); None when it is not one."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    if parse_timestamp(parts[0]) is None:
        return None
    return LogLine(
        parts[0], parts[1].decode(), parts[2] == b"P", parts[3] if len(parts) == 4 else b""
    )


def parse_timestamp(text: bytes) -> int | None:
    """RFC 3339 (up to nanoseconds) as nanoseconds since the epoch; None when malformed."""
    import calendar

    match = _TIME.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    frac = (match.group(7) or b"").ljust(9, b"0")
    offset = 0
    zone = match.group(8)
    if zone != b"Z":
        sign = -1 if zone[:1] == b"-" else 1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
    except (OverflowError, ValueError):
        return None
    return seconds * 1_000_000_000 + int(frac)


class LineJoiner:
    """Feed records in file order; take whole lines (partial pieces joined per stream)."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[bytes, bytearray]] = {}

    def feed(self, record: LogLine) -> LogLine | None:
        """The whole line ``record`` completes, or None while the line goes on."""
        started = self._pending.get(record.stream)
        if started is None:
            started = self._pending[record.stream] = (record.timestamp, bytearray())
        started[1].extend(record.content)
        if record.partial:
            return None
        del self._pending[record.stream]
        return LogLine(started[0], record.stream, False, bytes(started[1]))

    def flush(self) -> list[LogLine]:
        """Lines still open (the container ended mid-line), as they are."""
        out = [
            LogLine(ts, stream, True, bytes(data)) for stream, (ts, data) in self._pending.items()
        ]
        self._pending.clear()
        return out
