"""Host mounts the VM runtime makes: the share's propagation point and rootfs binds.

Plain mount(2)/umount2(2) through ctypes (microseconds each; no ``mount``
binary to exec). Every mount made here is undone by the same module.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

__all__ = ["bind", "bind_propagating", "is_mountpoint", "make_shared", "unmount"]

MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
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


def bind_propagating(source: Path, target: Path, propagation: str, stage: Path) -> None:
    """Bind ``source`` on ``target`` (under the shared share) with ``propagation``.

    A direct bind of a shared source joins the source's peer group, and then
    every later host mount under ``source`` would reach the guest whatever
    the container asked. So the copy goes through ``stage``, a directory
    outside the share: bound there, made "slave" (later host mounts still
    arrive) or "private" (they never do), bound on to ``target``, and
    ``stage`` is detached again.
    """
    stage.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        stage.mkdir()
    else:
        stage.touch(exist_ok=False)
    try:
        _mount(str(source), stage, MS_BIND | MS_REC)
        try:
            _mount(None, stage, (MS_SLAVE if propagation == "slave" else MS_PRIVATE) | MS_REC)
            _mount(str(stage), target, MS_BIND | MS_REC)
        finally:
            unmount(stage)
    finally:
        if stage.is_dir():
            stage.rmdir()
        else:
            stage.unlink()


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
