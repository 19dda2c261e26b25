"""The btrfs ioctls the driver needs, on directory descriptors (``linux/btrfs.h``).

Subvolumes and snapshots are made by the kernel directly rather than by
``btrfs(8)``: one ioctl instead of one process per layer. The argument
structs are packed by small pure functions (tested byte for byte); the
calls are blocking, so the driver runs them in threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "FIRST_FREE_OBJECTID",
    "create_subvolume",
    "destroy_qgroup",
    "destroy_subvolume",
    "enable_quota",
    "is_subvolume",
    "limit_qgroup",
    "pack_qgroup_limit",
    "pack_vol_args",
    "pack_vol_args_v2",
    "quota_enabled",
    "set_read_only",
    "snapshot",
    "subvolume_id",
]

_MAGIC = 0x94
#: The inode number of every subvolume's root directory.
FIRST_FREE_OBJECTID = 256
_VOL_ARGS_SIZE = 4096  # struct btrfs_ioctl_vol_args: __s64 fd; char name[4088]
_VOL_ARGS_V2_SIZE = 4096  # fd, transid, flags, unused[4], name[4040]
_PATH_NAME_MAX = 4087
_SUBVOL_NAME_MAX = 4039
_QGROUP_LIMIT_SIZE = 48  # __u64 qgroupid; struct btrfs_qgroup_limit (5 x __u64)
_QUOTA_CTL_SIZE = 16  # __u64 cmd, status
_QGROUP_CREATE_SIZE = 16  # __u64 create, qgroupid
_INO_LOOKUP_SIZE = 4096  # __u64 treeid, objectid; char name[4080]
_QUOTA_CTL_ENABLE = 1
_QGROUP_LIMIT_MAX_RFER = 1
SUBVOL_RDONLY = 1 << 1


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_MAGIC << 8) | nr


_W, _R, _RW = 1, 2, 3
IOC_SUBVOL_CREATE = _ioc(_W, 14, _VOL_ARGS_SIZE)
IOC_SNAP_DESTROY = _ioc(_W, 15, _VOL_ARGS_SIZE)
IOC_INO_LOOKUP = _ioc(_RW, 18, _INO_LOOKUP_SIZE)
IOC_SNAP_CREATE_V2 = _ioc(_W, 23, _VOL_ARGS_V2_SIZE)
IOC_SUBVOL_GETFLAGS = _ioc(_R, 25, 8)
IOC_SUBVOL_SETFLAGS = _ioc(_W, 26, 8)
IOC_QUOTA_CTL = _ioc(_RW, 40, _QUOTA_CTL_SIZE)
IOC_QGROUP_CREATE = _ioc(_W, 42, _QGROUP_CREATE_SIZE)
IOC_QGROUP_LIMIT = _ioc(_R, 43, _QGROUP_LIMIT_SIZE)  # _IOR in the header, though it is input
IOC_FS_INFO = _ioc(_R, 31, 1024)  # struct btrfs_ioctl_fs_info_args; fsid: 16 bytes at 16


def _name(name: str, limit: int) -> bytes:
    raw = os.fsencode(name)
    if not raw or b"/" in raw or b"\0" in raw or len(raw) > limit:
        raise ValueError(f"{name!r} is not a valid subvolume name")
    return raw


def pack_vol_args(name: str, fd: int = 0) -> bytes:
    """``struct btrfs_ioctl_vol_args`` for SUBVOL_CREATE and SNAP_DESTROY."""
    raw = _name(name, _PATH_NAME_MAX)
    return struct.pack("<q", fd) + raw.ljust(_VOL_ARGS_SIZE - 8, b"\0")


def pack_vol_args_v2(name: str, source_fd: int, flags: int = 0) -> bytes:
    """``struct btrfs_ioctl_vol_args_v2`` for SNAP_CREATE_V2 (a snapshot of ``source_fd``)."""
    raw = _name(name, _SUBVOL_NAME_MAX)
    head = struct.pack("<qQQ32x", source_fd, 0, flags)
    return head + raw.ljust(_VOL_ARGS_V2_SIZE - len(head), b"\0")


def pack_qgroup_limit(max_referenced: int, qgroup_id: int = 0) -> bytes:
    """``struct btrfs_ioctl_qgroup_limit_args``: cap the bytes a subvolume refers to.

    ``qgroup_id`` 0 means the subvolume the ioctl is called on.
    """
    return struct.pack("<6Q", qgroup_id, _QGROUP_LIMIT_MAX_RFER, max_referenced, 0, 0, 0)


@contextlib.contextmanager
def _opened(path: Path | str) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def create_subvolume(parent_dir: Path, name: str) -> None:
    """A new empty subvolume ``parent_dir/name``."""
    with _opened(parent_dir) as fd:
        fcntl.ioctl(fd, IOC_SUBVOL_CREATE, bytearray(pack_vol_args(name)))


def snapshot(source: Path, parent_dir: Path, name: str, read_only: bool = False) -> None:
    """A snapshot of subvolume ``source`` at ``parent_dir/name`` (writable by default)."""
    with _opened(source) as src, _opened(parent_dir) as dst:
        flags = SUBVOL_RDONLY if read_only else 0
        fcntl.ioctl(dst, IOC_SNAP_CREATE_V2, bytearray(pack_vol_args_v2(name, src, flags)))


def destroy_subvolume(parent_dir: Path, name: str) -> None:
    """Delete subvolume ``parent_dir/name`` (it must hold no other subvolume)."""
    with _opened(parent_dir) as fd:
        fcntl.ioctl(fd, IOC_SNAP_DESTROY, bytearray(pack_vol_args(name)))


def is_subvolume(path: Path | str) -> bool:
    """Whether ``path`` is the root of a subvolume (a directory with inode 256)."""
    st = os.lstat(path)
    return st.st_ino == FIRST_FREE_OBJECTID and (st.st_mode & 0o170000) == 0o040000


def set_read_only(path: Path, read_only: bool = True) -> None:
    """Set or clear a subvolume's read-only flag."""
    with _opened(path) as fd:
        buf = bytearray(8)
        fcntl.ioctl(fd, IOC_SUBVOL_GETFLAGS, buf)
        (flags,) = struct.unpack("<Q", buf)
        flags = (flags | SUBVOL_RDONLY) if read_only else (flags & ~SUBVOL_RDONLY)
        fcntl.ioctl(fd, IOC_SUBVOL_SETFLAGS, struct.pack("<Q", flags))


def subvolume_id(path: Path) -> int:
    """The id (tree id) of the subvolume holding ``path``: its qgroup is ``0/ID``."""
    with _opened(path) as fd:
        buf = bytearray(struct.pack("<QQ", 0, FIRST_FREE_OBJECTID).ljust(_INO_LOOKUP_SIZE, b"\0"))
        fcntl.ioctl(fd, IOC_INO_LOOKUP, buf)
        (tree_id,) = struct.unpack_from("<Q", buf)
        return tree_id


def enable_quota(path: Path) -> None:
    """Turn on qgroup accounting for the whole file system holding ``path``."""
    with _opened(path) as fd:
        fcntl.ioctl(fd, IOC_QUOTA_CTL, bytearray(struct.pack("<QQ", _QUOTA_CTL_ENABLE, 0)))


def quota_enabled(path: Path) -> bool:
    """Whether qgroups are on, from sysfs (``/sys/fs/btrfs/FSID/qgroups`` exists then)."""
    fsid = _fsid(path)
    return fsid is not None and Path(f"/sys/fs/btrfs/{fsid}/qgroups").is_dir()


def _fsid(path: Path) -> str | None:
    with _opened(path) as fd:
        buf = bytearray(1024)
        try:
            fcntl.ioctl(fd, IOC_FS_INFO, buf)
        except OSError:
            return None
    raw = bytes(buf[16:32]).hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def limit_qgroup(path: Path, max_referenced: int) -> None:
    """Cap what subvolume ``path`` may refer to (its own and shared extents)."""
    with _opened(path) as fd:
        fcntl.ioctl(fd, IOC_QGROUP_LIMIT, bytearray(pack_qgroup_limit(max_referenced)))


def destroy_qgroup(fs_path: Path, subvolume: int) -> None:
    """Drop qgroup ``0/subvolume`` (left behind by a deleted subvolume)."""
    with _opened(fs_path) as fd:
        fcntl.ioctl(fd, IOC_QGROUP_CREATE, struct.pack("<QQ", 0, subvolume))
