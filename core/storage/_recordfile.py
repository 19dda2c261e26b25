"""One JSON array of records on disk, read and written under its lock file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Generic

from crio.errors import StorageError
from crio.storage._files import LockFile, atomic_write
from crio.storage.records import R, from_json, to_json

__all__ = ["RecordFile"]


class RecordFile(Generic[R]):
    """``layers.json``, ``images.json`` or ``containers.json``.

    Reads are cached and reused while neither the lock file's last-writer
    token nor the file changed. Call :meth:`read` and :meth:`write` only
    while holding :attr:`lock`.
    """

    def __init__(self, path: Path, lock: LockFile, cls: type[R]) -> None:
        self.path = path
        self.lock = lock
        self._cls = cls
        self._key: tuple[object, ...] | None = None
        self._records: list[R] = []

    def _stamp(self) -> tuple[object, ...]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (self.lock.token(), None)
        return (self.lock.token(), st.st_ino, st.st_mtime_ns, st.st_size)

    def read(self) -> list[R]:
        key = self._stamp()
        if key == self._key:
            return list(self._records)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        try:
            raw = json.loads(data) if data.strip() else []
            if not isinstance(raw, list):
                raise ValueError("not a JSON array")
            records = [from_json(self._cls, item) for item in raw]
        except (ValueError, TypeError, AttributeError) as exc:
            raise StorageError(f"{self.path} is damaged: {exc}") from exc
        self._key, self._records = key, records
        return list(records)

    def write(self, records: list[R]) -> None:
        data = json.dumps([to_json(r) for r in records], separators=(",", ":")).encode()
        atomic_write(self.path, data)
        self.lock.touch()
        self._key, self._records = self._stamp(), list(records)
