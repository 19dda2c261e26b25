"""Tars and change lists of directories, for drivers' ``diff``, ``changes`` and export.

These read directories (blocking: call from a thread). Deletions are written
the OCI way (``.wh.NAME``, ``.wh..wh..opq``) whatever the driver's own
format, so a diff made here applies on any driver.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from crio.storage.driver import Change, ChangeKind
from crio.storage.tarapply import OPAQUE, WHITEOUT_PREFIX

__all__ = [
    "DirEntry",
    "changes_against",
    "overlay_changes",
    "overlay_entries",
    "tar_directory",
    "tar_entries",
    "walk",
]

_OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One item of a layer tar: a path relative to the root, or a deletion marker."""

    path: str  # "etc/hosts"
    whiteout: bool = False  # write ".wh.<name>" instead of the file
    opaque: bool = False  # write "<path>/.wh..wh..opq" after the directory


def walk(root: Path, rel: str = "") -> Iterator[str]:
    """Relative paths under ``root``, parents before children, by name; no symlink followed."""
    base = root / rel if rel else root
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except (NotADirectoryError, FileNotFoundError):
        return
    for entry in entries:
        child = f"{rel}/{entry.name}" if rel else entry.name
        yield child
        if entry.is_dir(follow_symlinks=False):
            yield from walk(root, child)


def _xattrs(path: str) -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return found
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        found[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return found


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def overlay_entries(upper: Path) -> Iterator[DirEntry]:
    """The items of an overlay upper directory, whiteouts and opaque dirs translated."""
    for rel in walk(upper):
        full = upper / rel
        st = os.lstat(full)
        if _is_whiteout(st):
            yield DirEntry(rel, whiteout=True)
        elif stat.S_ISDIR(st.st_mode) and _is_opaque(full):
            yield DirEntry(rel, opaque=True)
        else:
            yield DirEntry(rel)


class _Sink(io.RawIOBase):
    """A write-only buffer that tarfile writes into and the generator drains."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def _tarinfo(
    root: Path, rel: str, st: os.stat_result, links: dict[tuple[int, int], str]
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)
    info.uname = info.gname = ""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
        else:
            if st.st_nlink > 1:
                links[key] = rel
            info.type, info.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(root / rel)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        raise ValueError(f"cannot put {rel!r} (a socket) into a tar")
    xattrs = _xattrs(str(root / rel))
    if xattrs:
        info.pax_headers = xattrs
    return info


def tar_entries(root: Path, entries: Iterable[DirEntry], chunk: int = 1 << 20) -> Iterator[bytes]:
    """A PAX tar of ``entries`` (paths under ``root``), yielded in pieces."""
    sink = _Sink()
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for entry in entries:
            parent, _, name = entry.path.rpartition("/")
            if entry.whiteout:
                marker = tarfile.TarInfo(f"{parent}/{WHITEOUT_PREFIX}{name}".lstrip("/"))
                tar.addfile(marker)
            else:
                try:
                    st = os.lstat(root / entry.path)
                except FileNotFoundError:
                    continue
                info = _tarinfo(root, entry.path, st, links)
                if info.type == tarfile.REGTYPE:
                    with open(root / entry.path, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
                if entry.opaque:
                    tar.addfile(tarfile.TarInfo(f"{entry.path}/{OPAQUE}"))
            if sum(len(c) for c in sink.chunks) >= chunk:
                yield sink.drain()
    rest = sink.drain()
    if rest:
        yield rest


def tar_directory(root: Path) -> Iterator[bytes]:
    """A tar of everything under ``root`` (a container's file system for export)."""
    return tar_entries(root, (DirEntry(rel) for rel in walk(root)))


def _differs(a: os.stat_result, b: os.stat_result, same_content: Callable[[], bool]) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return True
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return True
    if stat.S_ISDIR(a.st_mode):
        return False
    if a.st_size != b.st_size or a.st_rdev != b.st_rdev:
        return True
    if int(a.st_mtime) != int(b.st_mtime):
        return not same_content()
    return False


def changes_against(layer: Path, parent: Path | None) -> list[tuple[DirEntry, ChangeKind]]:
    """Compare two full copies (vfs): what ``layer`` adds, changes and deletes."""
    found: list[tuple[DirEntry, ChangeKind]] = []
    seen: set[str] = set()
    for rel in walk(layer):
        seen.add(rel)
        st = os.lstat(layer / rel)
        try:
            old = os.lstat(parent / rel) if parent is not None else None
        except FileNotFoundError:
            old = None
        if old is None:
            found.append((DirEntry(rel), ChangeKind.ADD))
        elif _differs(st, old, lambda rel=rel: _same_file(layer / rel, parent / rel)):  # type: ignore[operator]
            found.append((DirEntry(rel), ChangeKind.MODIFY))
    if parent is not None:
        deleted_dirs: list[str] = []
        for rel in walk(parent):
            if rel in seen or any(rel.startswith(d + "/") for d in deleted_dirs):
                continue
            if os.path.isdir(parent / rel) and not os.path.islink(parent / rel):
                deleted_dirs.append(rel)
            found.append((DirEntry(rel, whiteout=True), ChangeKind.DELETE))
    found.sort(key=lambda item: item[0].path)
    return found


def _same_file(a: Path, b: Path) -> bool:
    if os.path.islink(a) or os.path.islink(b):
        return os.readlink(a) == os.readlink(b)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 16), fb.read(1 << 16)
            if x != y:
                return False
            if not x:
                return True


def overlay_changes(upper: Path, lowers: list[Path]) -> list[Change]:
    """``kpod diff`` of an overlay layer: its upper directory against its lowers."""
    out: list[Change] = []
    for entry in overlay_entries(upper):
        path = "/" + entry.path
        if entry.whiteout:
            out.append(Change(path, ChangeKind.DELETE))
            continue
        in_lower = any(os.path.lexists(lower / entry.path) for lower in lowers)
        out.append(Change(path, ChangeKind.MODIFY if in_lower else ChangeKind.ADD))
    return out
