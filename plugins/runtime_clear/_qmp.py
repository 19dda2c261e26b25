"""A blocking QMP client for the few commands a template needs (standard library only).

QMP is qemu's JSON monitor: a greeting, ``qmp_capabilities``, then one JSON
object per line each way; a command is answered by ``{"return": ...}`` or
``{"error": {"class", "desc"}}``, and asynchronous ``{"event": ...}`` lines
may come in between. The supervisor (which must start fast: no asyncio) and
the template builder (in a thread) use it to save and restore a VM.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["QMP", "QMPError", "encode_command", "parse_line"]

#: How often a migration's progress is asked for.
POLL = 0.005


class QMPError(Exception):
    """qemu refused a command, closed the monitor or did not answer in time."""


def encode_command(name: str, args: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"execute": name}
    if args:
        message["arguments"] = args
    return json.dumps(message).encode() + b"\n"


def parse_line(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise QMPError(f"qemu sent a line that is not JSON: {line[:200]!r}") from exc
    if not isinstance(message, dict):
        raise QMPError(f"qemu sent a line that is not an object: {line[:200]!r}")
    return message


class QMP:
    """One monitor connection; every call blocks until qemu answers."""

    def __init__(
        self, path: str, timeout: float = 30.0, alive: Callable[[], bool] = lambda: True
    ) -> None:
        """Connect, waiting up to ``timeout`` for qemu to listen while ``alive()`` holds."""
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if not alive():
                    raise QMPError(f"qemu went away before its monitor {path} opened") from exc
                if time.monotonic() > deadline:
                    raise QMPError(f"no qemu monitor on {path} after {timeout:g}s") from exc
                time.sleep(0.005)
        sock.settimeout(timeout)
        self.sock = sock
        self.reader = sock.makefile("rb")
        greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError(f"qemu monitor {path} did not greet: {greeting}")
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        try:
            line = self.reader.readline()
        except OSError as exc:
            raise QMPError(f"reading from the qemu monitor: {exc}") from exc
        if not line:
            raise QMPError("qemu closed its monitor")
        return parse_line(line)

    def execute(self, name: str, /, **args: Any) -> Any:
        """Run one command; its ``return`` value.

        :raises QMPError: qemu answered with an error (its class and text), or
            went away.
        """
        try:
            self.sock.sendall(encode_command(name, args))
        except OSError as exc:
            raise QMPError(f"{name}: {exc}") from exc
        while True:
            message = self._read()
            if "event" in message:
                self.events.append(message)
                continue
            if "error" in message:
                error = message["error"]
                raise QMPError(f"{name}: {error.get('class')}: {error.get('desc')}")
            if "return" in message:
                return message["return"]

    def wait_migration(self, timeout: float) -> dict[str, Any]:
        """Poll ``query-migrate`` until the migration ends; its last status.

        :raises QMPError: it failed, was cancelled, or outlasted ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            info = self.execute("query-migrate")
            status = info.get("status", "")
            if status == "completed":
                return dict(info)
            if status in ("failed", "cancelled"):
                raise QMPError(f"migration {status}: {info.get('error-desc', 'no reason given')}")
            if time.monotonic() > deadline:
                raise QMPError(f"migration still {status or 'not started'} after {timeout:g}s")
            time.sleep(POLL)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
