"""A writer for the ``newc`` cpio format the kernel unpacks as an initramfs.

Pure: entries in, bytes out. Only what an initramfs needs: directories,
regular files, symlinks and character devices, owned by root, with a fixed
modification time so the same inputs give the same bytes (and checksum).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CpioEntry", "directory", "file", "symlink", "write_newc"]

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True, slots=True)
class CpioEntry:
    """One archive member; ``data`` is a file's contents or a symlink's target."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith("/") or ".." in self.name.split("/"):
            raise ValueError(f"cpio entry name must be relative and stay inside: {self.name!r}")
        kind = stat.S_IFMT(self.mode)
        if kind not in (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR):
            raise ValueError(f"cpio entry {self.name!r}: unsupported file type {oct(kind)}")
        if self.data and kind not in (stat.S_IFREG, stat.S_IFLNK):
            raise ValueError(f"cpio entry {self.name!r}: only files and symlinks carry data")


def directory(name: str, perm: int = 0o755) -> CpioEntry:
    return CpioEntry(name, stat.S_IFDIR | perm)


def file(name: str, data: bytes, perm: int = 0o644) -> CpioEntry:
    return CpioEntry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> CpioEntry:
    return CpioEntry(name, stat.S_IFLNK | 0o777, target.encode())


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: CpioEntry, mtime: int) -> bytes:
    name = entry.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino,
        entry.mode,
        0,  # uid
        0,  # gid
        nlink,
        mtime,
        len(entry.data),
        0,  # dev major
        0,  # dev minor
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,  # check
    )
    head = _MAGIC + b"".join(b"%08X" % value for value in fields) + name
    return head + _pad(len(head))


def write_newc(entries: Iterable[CpioEntry], mtime: int = 0) -> bytes:
    """The archive of ``entries`` in order, ending with the trailer.

    Parents must come before their children (the kernel creates entries in
    archive order); a repeated name is refused.
    """
    out: list[bytes] = []
    seen: set[str] = set()
    for ino, entry in enumerate(entries, start=1):
        if entry.name in seen:
            raise ValueError(f"cpio entry {entry.name!r} appears twice")
        parent = entry.name.rpartition("/")[0]
        if parent and parent not in seen:
            raise ValueError(f"cpio entry {entry.name!r} comes before its directory {parent!r}")
        seen.add(entry.name)
        out.append(_header(ino, entry, mtime))
        out.append(entry.data + _pad(len(entry.data)))
    out.append(_header(0, CpioEntry(_TRAILER, stat.S_IFREG), 0))
    return b"".join(out)
