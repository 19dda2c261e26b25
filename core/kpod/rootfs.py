"""Paths inside a container's root, walked by file descriptor so that nothing leads out of it.

Every lookup starts at a descriptor of the root and goes one component at a
time with ``O_PATH | O_NOFOLLOW``: a symbolic link is read and resolved as
if the root were ``/`` (an absolute target starts again at the root, ``..``
stops at the root), so a hostile image's ``evil -> /etc`` names the
container's /etc and ``up -> ../../..`` the container's root. Nothing is
ever opened by a path string that the kernel would resolve on its own, so
a link swapped in while we walk cannot redirect us either.

:func:`write_tar` and :func:`extract_tar` move trees in and out as tar
streams, keeping mode, owner and times; an archive member that names a path
outside the destination (``../x``, ``/x``, a hard link to outside) is refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from crio.errors import InvalidRequestError, NotFoundError

__all__ = [
    "EscapeError",
    "Resolved",
    "extract_tar",
    "is_dir",
    "open_root",
    "resolve",
    "write_tar",
]

MAX_LINKS = 40  # as the kernel's ELOOP limit for one lookup
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class EscapeError(InvalidRequestError):
    """An archive member would land outside the destination."""


def open_root(path: str) -> int:
    """A descriptor of the directory ``path`` (opened by the host's rules: it is ours)."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


@dataclass(slots=True)
class Resolved:
    """The directory holding a path (``parent`` descriptor) and the path's last name.

    ``name`` is "" when the path is the root itself. ``exists`` tells whether
    the last component is there; ``st`` is its lstat.
    """

    parent: int
    name: str
    exists: bool
    st: os.stat_result | None

    def close(self) -> None:
        os.close(self.parent)


def _components(path: str) -> deque[str]:
    return deque(p for p in path.split("/") if p not in ("", "."))


def resolve(root: int, path: str, *, follow: bool = False) -> Resolved:
    """Find ``path`` under ``root`` (see the module doc); ``follow`` a final symlink too.

    :raises NotFoundError: a directory on the way does not exist.
    :raises InvalidRequestError: a non-directory on the way, or too many links.
    """
    stack = [os.dup(root)]
    parts = _components(path)
    links = 0
    try:
        while parts:
            part = parts.popleft()
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
            except FileNotFoundError:
                if parts:
                    raise NotFoundError(f"{path}: {part} does not exist") from None
                return Resolved(os.dup(stack[-1]), part, False, None)
            last = not parts
            if stat.S_ISLNK(st.st_mode) and (follow or not last):
                links += 1
                if links > MAX_LINKS:
                    raise InvalidRequestError(f"{path}: too many levels of symbolic links")
                target = os.readlink(part, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                parts.extendleft(reversed(_components(target)))
                continue
            if last:
                return Resolved(os.dup(stack[-1]), part, True, st)
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidRequestError(f"{path}: {part} is not a directory")
            stack.append(os.open(part, _PATH | os.O_DIRECTORY, dir_fd=stack[-1]))
        # The path named the root itself (or a ".." chain up to it).
        top = os.dup(stack[-1])
        return Resolved(top, "", True, os.stat(top))
    finally:
        for fd in stack:
            os.close(fd)


# -- out: a tree as a tar stream ------------------------------------------------


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = st.st_mtime
    info.uname = info.gname = ""
    return info


def _add(tar: tarfile.TarFile, parent: int, name: str, arcname: str, seen: dict) -> None:
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    info = _info(arcname, st)
    if stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in seen:
            info.type, info.linkname = tarfile.LNKTYPE, seen[key]
            tar.addfile(info)
            return
        seen[key] = arcname
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        with os.fdopen(fd, "rb") as handle:
            info.size = os.fstat(fd).st_size
            tar.addfile(info, handle)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
        try:
            for entry in sorted(os.listdir(fd)):
                _add(tar, fd, entry, f"{arcname}/{entry}", seen)
        finally:
            os.close(fd)
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=parent)
        tar.addfile(info)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tar.addfile(info)
    # sockets are not archived (as GNU tar)


def write_tar(out: IO[bytes], parent: int, name: str, arcname: str, *, contents: bool) -> None:
    """Archive ``name`` in ``parent`` as ``arcname`` (``contents``: only what a directory holds)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        seen: dict = {}
        if contents:
            fd = os.open(name or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)
            try:
                for entry in sorted(os.listdir(fd)):
                    _add(tar, fd, entry, entry, seen)
            finally:
                os.close(fd)
        else:
            _add(tar, parent, name or ".", arcname, seen)


# -- in: a tar stream into a directory ---------------------------------------------


def _member_parts(name: str) -> list[str]:
    if name.startswith("/"):
        raise EscapeError(f"archive member {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise EscapeError(f"archive member {name!r} leaves the destination ('..')")
    return parts


def _rename_top(parts: list[str], top: str | None) -> list[str]:
    return [top, *parts[1:]] if top and parts else parts


@contextlib.contextmanager
def _parent_of(root: int, parts: list[str]) -> Iterator[int]:
    """The directory that holds ``parts[-1]``, walked from ``root`` without leaving it."""
    found = resolve(root, "/".join(parts[:-1]), follow=True)
    try:
        if not found.exists:
            raise NotFoundError(f"{'/'.join(parts)}: its directory does not exist")
        if found.name:
            fd = os.open(found.name, _PATH | os.O_DIRECTORY, dir_fd=found.parent)
        else:
            fd = os.dup(found.parent)
    finally:
        found.close()
    try:
        yield fd
    finally:
        os.close(fd)


def _clear(parent: int, name: str, want_dir: bool) -> bool:
    """Make room for ``name``; True when an existing directory is kept."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if want_dir:
            return True
        raise InvalidRequestError(f"cannot overwrite directory {name!r} with a non-directory")
    os.unlink(name, dir_fd=parent)
    return False


def _make(
    parent: int,
    name: str,
    member: tarfile.TarInfo,
    tar: tarfile.TarFile,
    root: int,
    base: list[str],
) -> None:
    if member.isdir():
        if not _clear(parent, name, True):
            os.mkdir(name, 0o700, dir_fd=parent)
    elif member.isfile():
        _clear(parent, name, False)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            source = tar.extractfile(member)
            assert source is not None
            while chunk := source.read(1 << 20):
                out.write(chunk)
    elif member.issym():
        _clear(parent, name, False)
        os.symlink(member.linkname, name, dir_fd=parent)
    elif member.islnk():
        target = _member_parts(member.linkname)
        _clear(parent, name, False)
        with _parent_of(root, [*base, *target]) as holder:
            os.link(target[-1], name, src_dir_fd=holder, dst_dir_fd=parent, follow_symlinks=False)
    elif member.isfifo():
        _clear(parent, name, False)
        os.mkfifo(name, 0o600, dir_fd=parent)
    elif member.ischr() or member.isblk():
        _clear(parent, name, False)
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
    else:
        raise InvalidRequestError(f"archive member {member.name!r}: unsupported type")


def _attributes(parent: int, name: str, member: tarfile.TarInfo) -> None:
    os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
    if not member.issym():
        os.chmod(name, member.mode & 0o7777, dir_fd=parent)
    os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)


def extract_tar(source: IO[bytes], root: int, dest: str, *, top: str | None = None) -> int:
    """Unpack a tar stream into the directory ``dest`` under ``root``; the number of members.

    ``top`` renames the archive's first path component (``cp dir newname``).
    Parent directories are walked with :func:`resolve` from ``root`` (links,
    the archive's own too, followed inside ``root`` only); members are created
    without following a link at their own name, then given their owner, mode
    and times. Hard links name their target relative to ``dest``.

    :raises EscapeError: a member names a path outside ``dest`` ('..', '/', a link out).
    """
    base = list(_components(dest))
    directories: list[tuple[list[str], tarfile.TarInfo]] = []
    count = 0
    try:
        tar = tarfile.open(fileobj=source, mode="r|*")  # noqa: SIM115 (closed by the with below)
    except tarfile.TarError as exc:
        raise InvalidRequestError(f"not a tar archive: {exc}") from None
    with tar:
        for member in tar:
            parts = _rename_top(_member_parts(member.name), top)
            if not parts:
                continue
            with _parent_of(root, [*base, *parts]) as parent:
                _make(parent, parts[-1], member, tar, root, base)
                if member.isdir():
                    directories.append((parts, member))
                else:
                    _attributes(parent, parts[-1], member)
            count += 1
    for parts, member in reversed(directories):  # times last: their contents changed them
        with _parent_of(root, [*base, *parts]) as parent:
            _attributes(parent, parts[-1], member)
    return count


def is_dir(resolved: Resolved) -> bool:
    return resolved.st is not None and stat.S_ISDIR(resolved.st.st_mode)
