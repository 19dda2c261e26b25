"""Cross-process locks and atomic writes, compatible with containers/storage.

Lock files (``layers.lock``, ``images.lock``, ``containers.lock``,
``mountpoints.lock``) are locked with POSIX record locks on the whole file
(``fcntl(F_SETLKW)``), as containers/storage's ``pkg/lockfile`` does, so
crio, kpod, podman and skopeo exclude each other. After changing the data a
lock protects, the writer stores a new 64-byte "last writer" token in the
lock file (time, counter, pid, random; little-endian), which is how other
processes notice that they must reload.

POSIX locks belong to a process, not to a descriptor, so within one process
a :class:`threading.Lock` per lock file orders the holders (coroutines or
threads; it is not re-entrant), and each lock file is opened once per
process. Closing any descriptor of a file drops every POSIX lock the process
has on it, so a lock file is closed only when the last of its users in the
process is done with it (:meth:`LockFile.close`): a store's four lock files
when the last store on that root closes, a layer's marker when its write
ends. (Kept open for ever, a daemon would hold one descriptor per layer it
ever pulled, and a closed store's files would keep its file system busy.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import secrets
import struct
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

__all__ = ["LockFile", "atomic_write", "fsync_dir"]

_TOKEN_SIZE = 64
_counter = itertools.count(1)
_registry: dict[Path, LockFile] = {}
_registry_lock = threading.Lock()


class LockFile:
    """One lock file, shared by every user in this process (see :meth:`at`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.Lock()
        self._fd = -1
        #: Callers of :meth:`at` that have not called :meth:`close` yet.
        self._users = 0

    @classmethod
    def at(cls, path: Path) -> LockFile:
        """The process-wide lock object for ``path`` (created on first use).

        Every call counts as one user until it calls :meth:`close`.
        """
        path = Path(os.path.abspath(path))
        with _registry_lock:
            lock = _registry.get(path)
            if lock is None:
                lock = _registry[path] = cls(path)
            lock._users += 1
            return lock

    def close(self) -> None:
        """This user is done with the lock file, and does not hold it.

        The last user closes the descriptor; the next :meth:`at` opens the
        file again. Left open while somebody in the process holds the lock.
        """
        with _registry_lock:
            self._users -= 1
            if self._users > 0 or not self._mutex.acquire(blocking=False):
                return
            try:
                if _registry.get(self.path) is self:
                    del _registry[self.path]
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
            finally:
                self._mutex.release()

    def _open(self) -> int:
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    def _lock_file(self) -> None:
        try:
            fcntl.lockf(self._open(), fcntl.LOCK_EX)
        except BaseException:
            self._mutex.release()
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock exclusively, blocking (for code running in a thread)."""
        self._mutex.acquire()
        self._lock_file()
        try:
            yield
        finally:
            self.release()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold the lock exclusively without blocking the event loop."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        if not self._mutex.acquire(blocking=False):
            await _in_thread(self._mutex.acquire, self._mutex.release)
        try:
            fcntl.lockf(self._open(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except (BlockingIOError, PermissionError):
            pass
        except BaseException:
            self._mutex.release()
            raise
        try:
            await _in_thread(
                lambda: fcntl.lockf(self._fd, fcntl.LOCK_EX) or True,
                lambda: fcntl.lockf(self._fd, fcntl.LOCK_UN),
            )
        except BaseException:
            self._mutex.release()
            raise

    def try_acquire(self) -> bool:
        """Take the lock if nobody (in any process) holds it; never waits."""
        if not self._mutex.acquire(blocking=False):
            return False
        try:
            fcntl.lockf(self._open(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            self._mutex.release()
            return False
        except BaseException:
            self._mutex.release()
            raise
        return True

    def release(self) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()

    def token(self) -> bytes:
        """The last-writer token (empty when nobody wrote yet); hold the lock."""
        return os.pread(self._open(), _TOKEN_SIZE, 0)

    def touch(self) -> bytes:
        """Record a new last-writer token; hold the lock. Returns the token."""
        token = struct.pack(
            "<QQI", time.time_ns(), next(_counter), os.getpid() & 0xFFFFFFFF
        ) + secrets.token_bytes(_TOKEN_SIZE - 20)
        os.pwrite(self._open(), token, 0)
        return token


async def _in_thread(acquire: Callable[[], object], undo: Callable[[], object]) -> None:
    """Run a blocking ``acquire`` in a thread; if we are cancelled meanwhile, ``undo`` it."""
    future = asyncio.ensure_future(asyncio.to_thread(acquire))
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:

        def _undo(done: asyncio.Future[object]) -> None:
            if not done.cancelled() and done.exception() is None:
                undo()

        future.add_done_callback(_undo)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, fsync the directory.

    Readers see the old or the new content, never a mix; a crash keeps one of them.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)
