"""Apply a layer tar to a directory: the I/O half of :mod:`crio.storage.tarapply`.

Every parent directory is opened relative to the layer root with
``O_NOFOLLOW | O_DIRECTORY``, and every name is created with ``*at`` calls
on that descriptor, so no member can write through a symlink, whatever the
archive did before. Blocking: call from a thread.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from crio.errors import StorageError
from crio.storage.driver import WhiteoutFormat
from crio.storage.tarapply import (
    ApplyPolicy,
    HostileLayerError,
    LayerFormatError,
    MakeDevice,
    MakeDirectory,
    MakeFile,
    MakeHardlink,
    MakeSymlink,
    MarkOpaque,
    Operation,
    Skip,
    Whiteout,
    plan,
)
from crio.storage.tarsplit import TarSplitWriter
from crio.storage.tarstream import (
    NEED_DATA,
    Data,
    End,
    Member,
    MemberEnd,
    TarFormatError,
    TarHeader,
    TarReader,
)

__all__ = ["ApplyResult", "apply_tar"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20

Parts = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying one layer tar produced."""

    #: Bytes of regular-file content written.
    size: int
    #: tar-split JSON lines (uncompressed), or None when the tar cannot be split
    #: (a path occurs twice, or a member's content was not kept).
    tar_split: bytes | None
    uids: tuple[int, ...] = ()
    gids: tuple[int, ...] = ()


@dataclass(slots=True)
class _Open:
    fd: int
    header: TarHeader
    path: Parts
    #: the permission bits still need setting (umask, set-id or sticky bits)
    chmod: bool = True


@dataclass(slots=True)
class _State:
    created: set[Parts] = field(default_factory=set)
    dir_times: list[tuple[Parts, float]] = field(default_factory=list)
    uids: set[int] = field(default_factory=set)
    gids: set[int] = field(default_factory=set)
    size: int = 0


def _shown(path: Parts) -> str:
    return "/".join(path) or "."


class _Applier:
    def __init__(self, root: Path, policy: ApplyPolicy) -> None:
        self.policy = policy
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.chown = os.geteuid() == 0
        #: permission bits the umask strips from a new file
        self._umasked = _umask() & 0o777
        self.state = _State()
        self._cached: tuple[Parts, int] | None = None

    def close(self) -> None:
        self._forget()
        os.close(self.root_fd)

    # -- directories -----------------------------------------------------

    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _dir(self, path: Parts, create: bool, entry: str) -> int:
        """An fd of directory ``path`` (cached: do not close it)."""
        if self._cached is not None and self._cached[0] == path:
            return self._cached[1]
        fd = os.dup(self.root_fd)
        try:
            for depth, name in enumerate(path):
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fd)
                    self.state.created.add(path[: depth + 1])
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    where = _shown(path[: depth + 1])
                    if stat.S_ISLNK(st.st_mode):
                        raise HostileLayerError(
                            f"layer entry {entry!r}: writes through symlinked parent {where!r}"
                        ) from None
                    raise LayerFormatError(
                        f"layer entry {entry!r}: parent {where!r} is not a directory"
                    ) from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        self._forget()
        self._cached = (path, fd)
        return fd

    def _clear(self, pfd: int, name: str) -> None:
        """Remove whatever is at ``name`` (a directory with its content)."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        # The cache holds ``pfd`` itself (every operation looks its parent up
        # first), never a directory below ``name``: removing it keeps the cache valid.
        if stat.S_ISDIR(st.st_mode):
            _rmtree_at(pfd, name)
        else:
            os.unlink(name, dir_fd=pfd)

    # -- metadata --------------------------------------------------------

    def _owner_and_mode(self, pfd: int, name: str, header: TarHeader, link: bool) -> None:
        if self.chown:
            os.chown(name, header.uid, header.gid, dir_fd=pfd, follow_symlinks=False)
        if not link:  # a node this applier just made, never a symlink
            os.chmod(name, header.mode, dir_fd=pfd)
        if header.xattrs:
            # pfd was opened safely; the magic link names exactly that directory.
            self._xattrs(f"/proc/self/fd/{pfd}/{name}", header, follow=False)
        ns = int(header.mtime * 1e9)
        os.utime(name, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    @staticmethod
    def _xattrs(target: str | int, header: TarHeader, follow: bool = True) -> None:
        for key, value in header.xattrs:
            os.setxattr(target, key, value, follow_symlinks=follow)  # type: ignore[arg-type]

    def _record_ids(self, header: TarHeader) -> None:
        self.state.uids.add(header.uid)
        self.state.gids.add(header.gid)

    # -- operations ------------------------------------------------------

    def begin(self, op: Operation) -> _Open | None:
        """Carry out ``op``; for a regular file return the open file to fill."""
        kind = type(op)
        if kind is MakeFile:
            return self._file(op)  # type: ignore[arg-type]
        if kind is Skip:
            return None
        entry = _shown(op.path)
        header = op.header  # type: ignore[union-attr]
        if kind is MarkOpaque:
            self._opaque(op.path, entry, header)
            return None
        if kind is Whiteout:
            self._whiteout(op.path, entry, header)
            return None
        self._record_ids(header)
        if kind is MakeDirectory:
            self._directory(op.path, entry, header)
            return None
        pfd = self._dir(op.path[:-1], create=True, entry=entry)
        name = op.path[-1]
        self._clear(pfd, name)
        self.state.created.add(op.path)
        if isinstance(op, MakeSymlink):
            os.symlink(op.target, name, dir_fd=pfd)
            self._owner_and_mode(pfd, name, header, link=True)
        elif isinstance(op, MakeHardlink):
            self._hardlink(pfd, name, op, entry)
        elif isinstance(op, MakeDevice):
            kind = {"3": stat.S_IFCHR, "4": stat.S_IFBLK, "6": stat.S_IFIFO}[header.type.value]
            device = os.makedev(header.devmajor, header.devminor)
            os.mknod(name, kind | (header.mode & 0o7777), device, dir_fd=pfd)
            self._owner_and_mode(pfd, name, header, link=False)
        return None

    def _file(self, op: MakeFile) -> _Open:
        """Create a regular file: the hot path (most members), so the fewest syscalls.

        The file is made with its final permission bits when the umask keeps
        them and there are no set-id/sticky bits (chown would clear set-id
        bits; those files get an explicit chmod after it). Whatever was at the
        name is removed only when the exclusive create finds something there.
        """
        path, header = op.path, op.header
        state = self.state
        state.uids.add(header.uid)
        state.gids.add(header.gid)
        parent = path[:-1]
        cached = self._cached
        if cached is not None and cached[0] == parent:
            pfd = cached[1]
        else:
            pfd = self._dir(parent, create=True, entry=_shown(path))
        name = path[-1]
        mode = header.mode
        try:
            fd = os.open(name, _FILE_FLAGS, mode & 0o777, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, name)
            fd = os.open(name, _FILE_FLAGS, mode & 0o777, dir_fd=pfd)
        state.created.add(path)
        state.size += header.size
        return _Open(fd, header, path, (mode & self._umasked) != 0 or (mode & 0o7000) != 0)

    def finish_file(self, handle: _Open) -> None:
        fd, header = handle.fd, handle.header
        try:
            if self.chown:
                os.fchown(fd, header.uid, header.gid)
            if handle.chmod:
                os.fchmod(fd, header.mode)
            if header.xattrs:
                self._xattrs(fd, header)
            ns = int(header.mtime * 1e9)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def _directory(self, path: Parts, entry: str, header: TarHeader) -> None:
        if path:
            pfd = self._dir(path[:-1], create=True, entry=entry)
            name = path[-1]
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=pfd)
                    os.mkdir(name, 0o700, dir_fd=pfd)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=pfd)
            self.state.created.add(path)
            dfd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        else:
            dfd = os.dup(self.root_fd)
        try:
            if self.chown:
                os.fchown(dfd, header.uid, header.gid)
            os.fchmod(dfd, header.mode)
            self._xattrs(dfd, header)
        finally:
            os.close(dfd)
        self.state.dir_times.append((path, header.mtime))

    def _hardlink(self, pfd: int, name: str, op: MakeHardlink, entry: str) -> None:
        target = op.target
        try:
            tfd = os.dup(self._dir(target[:-1], create=False, entry=entry))
        except FileNotFoundError:
            raise LayerFormatError(
                f"layer entry {entry!r}: hard link target {_shown(target)!r} is not in the layer"
            ) from None
        try:
            # _dir() may have replaced the cached parent: open ours again.
            pfd = self._dir(op.path[:-1], create=True, entry=entry)
            os.link(target[-1], name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise LayerFormatError(
                f"layer entry {entry!r}: hard link target {_shown(target)!r} is not in the layer"
            ) from None
        finally:
            os.close(tfd)

    def _whiteout(self, path: Parts, entry: str, header: TarHeader) -> None:
        fmt = self.policy.whiteout_format
        if fmt is WhiteoutFormat.OVERLAY:
            pfd = self._dir(path[:-1], create=True, entry=entry)
            self._clear(pfd, path[-1])
            os.mknod(path[-1], stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
            if self.chown:
                os.chown(path[-1], header.uid, header.gid, dir_fd=pfd, follow_symlinks=False)
            return
        try:
            pfd = self._dir(path[:-1], create=False, entry=entry)
        except FileNotFoundError:
            return
        self._clear(pfd, path[-1])

    def _opaque(self, path: Parts, entry: str, header: TarHeader) -> None:
        fmt = self.policy.whiteout_format
        if path:
            pfd = self._dir(path[:-1], create=True, entry=entry)
            try:
                os.mkdir(path[-1], 0o755, dir_fd=pfd)
                self.state.created.add(path)
            except FileExistsError:
                pass
        dfd = os.dup(self._dir(path, create=True, entry=entry))
        try:
            if fmt is WhiteoutFormat.OVERLAY:
                os.setxattr(dfd, "trusted.overlay.opaque", b"y")  # type: ignore[arg-type]
            else:
                self._forget()
                _remove_unless(dfd, path, self.state.created)
        finally:
            os.close(dfd)

    def set_directory_times(self) -> None:
        self._forget()
        for path, mtime in self.state.dir_times:
            ns = int(mtime * 1e9)
            try:
                if path:
                    pfd = self._dir(path[:-1], create=False, entry=_shown(path))
                    os.utime(path[-1], ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
                else:
                    os.utime(self.root_fd, ns=(ns, ns))
            except FileNotFoundError:
                continue  # removed by a later whiteout


@functools.cache
def _umask() -> int:
    """This process's umask, read without changing it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777  # unknown: chmod every file


def _rmtree_at(pfd: int, name: str) -> None:
    fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    try:
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                _rmtree_at(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=pfd)


def _remove_unless(dfd: int, path: Parts, keep: set[Parts]) -> None:
    """Remove what is in directory ``dfd`` unless this layer created it."""
    for entry in list(os.scandir(dfd)):
        child = (*path, entry.name)
        if child not in keep:
            if entry.is_dir(follow_symlinks=False):
                _rmtree_at(dfd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=dfd)
        elif entry.is_dir(follow_symlinks=False):
            cfd = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
            try:
                _remove_unless(cfd, child, keep)
            finally:
                os.close(cfd)


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        written = os.write(fd, view)
        view = view[written:]


def apply_tar(root: Path, stream: IO[bytes], policy: ApplyPolicy) -> ApplyResult:
    """Extract the uncompressed tar ``stream`` into directory ``root``.

    Blocking. Reads ``stream`` to its end (so a caller hashing it sees every byte).

    :raises HostileLayerError: a member was refused (nothing outside ``root`` was touched).
    :raises LayerFormatError: the stream is not a tar archive crio can read.
    :raises StorageError: the file system failed.
    """
    applier = _Applier(root, policy)
    reader = TarReader()
    split = TarSplitWriter()
    current: _Open | None = None
    entry = b""  # the member being applied, for error messages
    lost = False
    try:
        done = False
        while not done:
            chunk = stream.read(_CHUNK)
            reader.receive_data(chunk)
            while True:
                event = reader.next_event()
                if event is NEED_DATA:
                    break
                split.feed(event)
                kind = type(event)
                if kind is Data:
                    if current is not None:
                        _write_all(current.fd, event.data)  # type: ignore[union-attr]
                elif kind is Member:
                    header = event.header  # type: ignore[union-attr]
                    entry = header.name
                    op = plan(header, policy)
                    # Content that is not kept (aufs bookkeeping) cannot be read back.
                    lost |= type(op) is Skip and header.size > 0
                    current = applier.begin(op)
                elif kind is MemberEnd:
                    if current is not None:
                        handle, current = current, None
                        applier.finish_file(handle)
                elif kind is End:
                    done = True
                    break
            if not chunk and not done:
                raise LayerFormatError("layer tar ended unexpectedly")
        while stream.read(_CHUNK):  # drain: the caller's digest covers the whole blob
            pass
        applier.set_directory_times()
    except TarFormatError as exc:
        raise LayerFormatError(f"layer is not a valid tar archive: {exc}") from None
    except OSError as exc:
        shown = entry.decode("utf-8", "backslashreplace")
        raise StorageError(f"applying layer entry {shown!r} under {root}: {exc}") from exc
    finally:
        if current is not None:
            os.close(current.fd)
        applier.close()
    state = applier.state
    return ApplyResult(
        size=state.size,
        tar_split=None if split.duplicate or lost else split.getvalue(),
        uids=tuple(sorted(state.uids)),
        gids=tuple(sorted(state.gids)),
    )
