"""crio's own log: text lines, or JSON lines with the fields of the call a line is about.

``crio --log-format json`` writes one JSON object per line on stderr, which
journald keeps as the message of each entry (``journalctl -u crio -o cat``)
and log shippers parse without patterns. Every line has ``time`` (RFC 3339,
UTC, microseconds), ``level``, ``logger`` and ``msg``; lines about a CRI call
add the fields the server puts in ``extra``: ``rpc``, ``code``, ``duration``
(seconds), ``pod`` and ``container`` (ids, when the request names them).
"""

from __future__ import annotations

import json
import logging
import time

__all__ = ["FIELDS", "FORMATS", "TEXT_FORMAT", "JsonFormatter", "formatter"]

#: The structured fields a log call may pass in ``extra``.
FIELDS = ("rpc", "code", "duration", "pod", "container", "image")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = record.created
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        line: dict[str, object] = {
            "time": f"{stamp}.{int(seconds % 1 * 1e6):06d}Z",
            "level": _LEVELS.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value not in (None, ""):
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``--log-format`` (``text`` or ``json``)."""
    if fmt == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)
