"""Host mounts the VM runtime makes: the share's propagation point and rootfs binds.

Plain mount(2)/umount2(2) through ctypes (microseconds each; no ``mount``
binary to exec). Every mount made here is undone by the same module.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

__all__ = ["bind", "is_mountpoint", "make_shared", "unmount"]

MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MS_REMOUNT = 32
MS_RDONLY = 1
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: Path, flags: int) -> None:
    if _libc.mount(
        None if source is None else source.encode(), str(target).encode(), None,
        ctypes.c_ulong(flags), None,
    ) != 0:  # fmt: skip
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def bind(source: Path, target: Path, readonly: bool = False) -> None:
    """Bind ``source`` (and the mounts under it) on ``target``."""
    _mount(str(source), target, MS_BIND | MS_REC)
    if readonly:
        _mount(None, target, MS_BIND | MS_REMOUNT | MS_RDONLY)


def make_shared(path: Path) -> None:
    """Make ``path`` a mount point of its own whose new submounts propagate to copies."""
    if not is_mountpoint(path):
        _mount(str(path), path, MS_BIND)
    _mount(None, path, MS_SHARED)


def unmount(path: Path) -> bool:
    """Detach the mount on ``path``; False when nothing was mounted there."""
    if _libc.umount2(str(path).encode(), MNT_DETACH) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(err, f"umount {path}: {os.strerror(err)}")


def is_mountpoint(path: Path) -> bool:
    """True when ``path`` is listed as a mount point in this process's namespace."""
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == target for line in mounts)
