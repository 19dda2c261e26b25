"""Exclusive claims on crio's directories: two crio instances never share one.

Start-up clean-up releases what a crashed crio left in its directories
(exit files, attach links, namespace pins, runtime state). A second crio
configured with the same runtime root or exits directory would take the
first one's live objects for such leftovers. (The state directory has its
own owner lock, :mod:`crio.state.owner`, which also serves kpod.) So a crio that serves (or runs
``crio check --repair``) holds an exclusive ``flock(2)`` on each of these
directories for as long as it runs, and one that cannot get it refuses to
start, naming the path and the key that configures it.

The lock is on the directory itself: no file is added to shared places such
as ``/run/runc`` (runc and crun take no lock on their root directory). It is
released by the kernel when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from crio.errors import ConfigError
from crio.oci.runtime import ExclusivePaths

if TYPE_CHECKING:
    from crio.config import Config
    from crio.oci.runtime import Runtime

__all__ = ["Claims", "claim", "claimed_paths", "lock_holder"]


@dataclass(slots=True)
class Claims:
    """The directory locks one crio holds; :meth:`release` lets them go."""

    fds: list[int] = field(default_factory=list)

    def release(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def claimed_paths(config: Config, runtimes: Iterable[Runtime]) -> list[tuple[str, str]]:
    """(configuration key, directory) of everything a serving crio holds for itself."""
    crio = config.crio
    rt = crio.runtime
    # The state directory has its owner lock (crio.state.owner), taken before this.
    paths = [
        ("crio.runtime.container_exits_dir", rt.container_exits_dir),
        ("crio.runtime.container_attach_socket_dir", rt.container_attach_socket_dir),
        ("crio.runtime.namespaces_dir", rt.namespaces_dir),
        # crio's own directories inside the store's run root (which podman shares).
        ("crio.runroot", str(Path(crio.runroot) / "crio-sandboxes")),
        ("crio.runroot", str(Path(crio.runroot) / "crio-net")),
    ]
    for runtime in runtimes:
        if isinstance(runtime, ExclusivePaths):
            paths += sorted(runtime.exclusive_paths().items())
    return paths


def lock_holder(st: os.stat_result) -> int:
    """The PID holding a flock on the file of ``st``, from /proc/locks; 0 if unknown."""
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return 0
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4711 00:1a:12345 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return 0


def claim(paths: Iterable[tuple[str, str]]) -> Claims:
    """Lock every directory (created if missing) exclusively, or lock none.

    Paths that are one directory (nested keys, a handler's root given twice) are
    locked once.

    :raises ConfigError: naming the first directory another process holds.
    """
    claims = Claims()
    seen: set[tuple[int, int]] = set()
    try:
        for key, path in paths:
            os.makedirs(path, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in seen:
                os.close(fd)
                continue
            seen.add((st.st_dev, st.st_ino))
            claims.fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = lock_holder(st)
                who = f"another crio (pid {holder})" if holder else "another crio"
                raise ConfigError(
                    f"{path} is in use by {who}; two crio instances must not share it "
                    "(give each its own)",
                    key=key,
                ) from None
    except BaseException:
        claims.release()
        raise
    return claims
