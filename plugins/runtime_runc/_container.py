"""The runc runtime's record of one container, kept in its bundle for a restarted crio."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crio.oci.runtime import ContainerState
from crio_plugins.runtime_runc._proc import write_json
from crio_plugins.runtime_runc.systemd import cgroup_path

__all__ = [
    "STATE_FILE",
    "RuncContainer",
    "in_cgroup",
    "is_monitor_of",
    "lists_cgroup",
    "monitor_pid",
    "read_pid",
    "runtime_pid",
    "wait_gone",
]

STATE_FILE = "runc.json"


@dataclass(slots=True)
class RuncContainer:
    container_id: str
    pod_sandbox_id: str
    name: str
    bundle: Path
    cgroups_path: str
    own_pid_ns: bool
    stop_signal: int
    log_path: str
    process: dict[str, Any]
    pid: int = 0
    pid_start: int = 0
    started_at: int = 0
    exit: ContainerState | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    def save(self) -> None:
        write_json(
            self.bundle / STATE_FILE,
            {
                "container_id": self.container_id,
                "pod_sandbox_id": self.pod_sandbox_id,
                "name": self.name,
                "cgroups_path": self.cgroups_path,
                "own_pid_ns": self.own_pid_ns,
                "stop_signal": self.stop_signal,
                "log_path": self.log_path,
                "pid": self.pid,
                "pid_start": self.pid_start,
                "started_at": self.started_at,
            },
        )


def read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def monitor_pid(bundle: Path, container_id: str) -> int:
    """The PID of the conmon that monitors ``container_id``, or 0 when none runs.

    conmon's pidfile alone is not enough: while crio was down the monitor may
    have died and its PID gone to an unrelated process, which crio must
    neither wait for nor take as a live monitor. The PID counts only while
    its command line is a conmon for this container (not an exec session).
    """
    pid = read_pid(bundle / "conmon-pidfile")
    if pid <= 0:
        return 0
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return 0
    return pid if is_monitor_of(argv, container_id) else 0


def is_monitor_of(argv: list[bytes], container_id: str) -> bool:
    """Whether the command line ``argv`` (split at NULs) is the conmon of ``container_id``."""
    if not argv or os.path.basename(argv[0]) != b"conmon" or b"-e" in argv:
        return False
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(b"-c") + 1] == container_id.encode()
    return False


def lists_cgroup(proc_cgroup: str, cgroups_path: str) -> bool:
    """Whether a ``/proc/PID/cgroup`` text puts the process in ``cgroups_path`` (or below)."""
    leaf = cgroup_path(cgroups_path).rstrip("/").rsplit("/", 1)[-1]
    for line in proc_cgroup.splitlines():
        path = line.split(":", 2)[-1]
        if f"/{leaf}/" in f"{path}/":
            return True
    return False


def in_cgroup(pid: int, cgroups_path: str) -> bool:
    """Whether process ``pid`` lives in the container cgroup ``cgroups_path``.

    Told apart this way, a PID read from runc's pidfile after a crash is the
    container's and not a process that took the PID over while crio was down.
    """
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            return lists_cgroup(handle.read(), cgroups_path)
    except OSError:
        return False


def runtime_pid(bundle: Path, cgroups_path: str) -> int:
    """The container's PID from the runtime's pidfile in ``bundle``, or 0.

    Read after a crash that came before crio noted the PID: the PID counts only
    while its process lives in the container's cgroup.
    """
    pid = read_pid(bundle / "pidfile")
    if pid and cgroups_path and not in_cgroup(pid, cgroups_path):
        return 0  # the container ended and its PID went to another process
    return pid


async def wait_gone(pid: int, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until process ``pid`` has exited; 0 or absent: at once."""
    if pid <= 0:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(pidfd, lambda: gone.done() or gone.set_result(None))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone, timeout)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
