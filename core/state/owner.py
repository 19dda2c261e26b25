"""Who may change the records under ``state_dir``: the running crio, or one kpod while none runs.

crio keeps its pods and containers in memory and on disk, and nothing it
holds in memory is re-read from disk while it runs. So that the two never
disagree, one process at a time owns the records: crio takes
``STATE_DIR/owner.lock`` (an exclusive ``flock``) before it reads them and
keeps it until it exits; ``crio check --repair`` and a kpod command that
changes a record take it for the length of their work. kpod, finding the
lock held, asks the running crio over its socket instead (CRI's own
StartContainer, StopContainer, RemoveContainer), so a running crio sees
every change at once and a restarted one reads it back from disk.

Readers need no lock: every record is replaced by an atomic rename, so a
reader sees a whole record, old or new.

The lock is an open file description: it dies with its holder, even one
killed with SIGKILL, and it is never inherited by the holder's children
(``O_CLOEXEC``), so a conmon outliving crio cannot keep it.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
from pathlib import Path

from crio.errors import WrongStateError

__all__ = ["LOCK_NAME", "StateOwner"]

log = logging.getLogger("crio.state")

LOCK_NAME = "owner.lock"


class StateOwner:
    """The held owner lock of one state directory; :meth:`release` (or exit) ends it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @staticmethod
    def _open(state_dir: Path) -> tuple[int, Path]:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = state_dir / LOCK_NAME
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600), path

    def _note(self, who: str) -> None:
        """Say who holds the lock (for the messages of those who wait)."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{who} {os.getpid()}\n".encode(), 0)

    @classmethod
    def try_take(cls, state_dir: Path, who: str) -> StateOwner | None:
        """The lock if nobody holds it, else None (without waiting).

        :param who: ``crio``, ``kpod`` or ``crio check``: written into the file.
        """
        fd, path = cls._open(Path(state_dir))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        owner = cls(fd, path)
        owner._note(who)
        return owner

    @staticmethod
    def holder(state_dir: Path) -> str:
        """``"crio 1234"``: who holds (or last held) the lock, "" if unknown."""
        try:
            return (Path(state_dir) / LOCK_NAME).read_text().strip()
        except OSError:
            return ""

    @classmethod
    async def take(cls, state_dir: Path, who: str = "crio") -> StateOwner:
        """The lock, waiting (in a worker thread) while a kpod or ``crio check`` holds it.

        :raises WrongStateError: another crio holds it (two crios on one state directory).
        """
        owner = cls.try_take(state_dir, who)
        if owner is not None:
            return owner
        holder = cls.holder(state_dir)
        if holder.startswith("crio "):
            raise WrongStateError(
                f"{Path(state_dir) / LOCK_NAME}: another crio (pid {holder.split()[1]}) "
                "uses this state_dir"
            )
        log.warning(
            "%s waits for %s, held by %s while it changes records",
            who,
            Path(state_dir) / LOCK_NAME,
            holder or "another process",
        )
        fd, path = cls._open(Path(state_dir))
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        owner = cls(fd, path)
        owner._note(who)
        return owner

    @staticmethod
    def held(state_dir: Path) -> bool:
        """Whether some process holds the lock now (crio runs, or a kpod changes records)."""
        path = Path(state_dir) / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(fd)
        return False

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
