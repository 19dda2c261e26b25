"""Small readers of /proc, and the runtime's own per-object files."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from crio.oci.runtime import InterfaceStats

__all__ = ["alive", "parse_net_dev", "process_start", "read_json", "running", "write_json"]


def process_start(pid: int) -> int:
    """The start time (clock ticks since boot) of ``pid``; 0 when it does not exist.

    Together with the PID it names one process for good: a reused PID starts later.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return 0
    fields = data[data.rfind(b")") + 2 :].split()
    # Fields after "(comm)" start at field 3 (state); starttime is field 22.
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def alive(pid: int, start: int) -> bool:
    """Whether the process ``pid`` that started at ``start`` still exists (zombies count)."""
    return pid > 0 and start > 0 and process_start(pid) == start


def running(pid: int, start: int) -> bool:
    """Whether that process still runs: a zombie does not (with its monitor gone, nobody
    may ever reap it, e.g. under an init that does not)."""
    if not alive(pid, start):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] not in (b"Z", b"X")


def parse_net_dev(text: str) -> list[InterfaceStats]:
    """The interfaces of a /proc/net/dev text (loopback left out)."""
    out = []
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        name = name.strip()
        values = rest.split()
        if not name or name == "lo" or len(values) < 16:
            continue
        out.append(
            InterfaceStats(
                name=name,
                rx_bytes=int(values[0]),
                rx_errors=int(values[2]),
                tx_bytes=int(values[8]),
                tx_errors=int(values[10]),
            )
        )
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write the runtime's own record of an object (run-time state, not fsynced).

    Atomic: a temporary file of this write's own (two writers never share
    one), renamed over ``path``; removed again when the write fails.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return None
