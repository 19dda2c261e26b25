"""mount(2) and umount2(2) without a subprocess, for graph drivers.

Blocking (the kernel may take a while): call from a thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "BTRFS_MAGIC",
    "MNT_DETACH",
    "fs_magic",
    "is_mountpoint",
    "mount",
    "split_options",
    "unmount",
]

MNT_DETACH = 2
#: ``statfs(2)``'s ``f_type`` of btrfs.
BTRFS_MAGIC = 0x9123683E

_FLAGS = {
    "ro": 1,  # MS_RDONLY
    "nosuid": 2,
    "nodev": 4,
    "noexec": 8,
    "sync": 16,
    "dirsync": 128,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
    "strictatime": 1 << 24,
}
_CLEARS = {"rw": 1, "suid": 2, "dev": 4, "exec": 8, "async": 16, "atime": 1024}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
#: ``struct statfs`` is 120 bytes on 64-bit Linux; ``f_type`` is its first word.
_STATFS_SIZE = 120


def split_options(options: Sequence[str]) -> tuple[int, str]:
    """Split ``["ro", "lowerdir=..."]`` into mount flags and the data string."""
    flags = 0
    data: list[str] = []
    for option in options:
        if not option:
            continue
        if option in _FLAGS:
            flags |= _FLAGS[option]
        elif option in _CLEARS:
            flags &= ~_CLEARS[option]
        else:
            data.append(option)
    return flags, ",".join(data)


def mount(source: str, target: Path | str, fstype: str, flags: int, data: str) -> None:
    """mount(2); raises OSError with the kernel's errno."""
    if _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, data.encode()):
        code = ctypes.get_errno()
        raise OSError(code, f"mount {fstype} on {target}: {os.strerror(code)}")


def unmount(target: Path | str, flags: int = MNT_DETACH) -> None:
    """umount2(2); a target that is not mounted or is gone is not an error."""
    if _libc.umount2(os.fsencode(target), flags):
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOENT):
            return
        raise OSError(code, f"unmount {target}: {os.strerror(code)}")


def is_mountpoint(path: Path | str) -> bool:
    """Whether something is mounted on ``path`` (st_dev differs from its parent's)."""
    try:
        st = os.lstat(path)
        parent = os.lstat(os.path.join(path, ".."))
    except OSError:
        return False
    return st.st_dev != parent.st_dev or st.st_ino == parent.st_ino


def fs_magic(path: Path | str) -> int:
    """The file system type (``statfs(2)``'s ``f_type``) holding ``path``.

    :raises OSError: ``path`` cannot be reached.
    """
    buf = ctypes.create_string_buffer(_STATFS_SIZE)
    if _libc.statfs(os.fsencode(path), buf):
        code = ctypes.get_errno()
        raise OSError(code, f"statfs {path}: {os.strerror(code)}")
    return int.from_bytes(buf.raw[:8], "little") & 0xFFFFFFFF
