"""Small file helpers for transports: chunked async reads, staged blob writes."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from crio.image.digest import Hasher

__all__ = ["StagedBlob", "file_chunks", "write_atomic"]

CHUNK = 1 << 20


async def file_chunks(path: str | Path, offset: int = 0, length: int = -1) -> AsyncIterator[bytes]:
    """Read ``length`` bytes (all: -1) from ``offset`` in worker threads, a MiB at a time."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        if offset:
            await asyncio.to_thread(f.seek, offset)
        left = length
        while left != 0:
            want = CHUNK if left < 0 else min(CHUNK, left)
            data = await asyncio.to_thread(f.read, want)
            if not data:
                break
            if left > 0:
                left -= len(data)
            yield data
    finally:
        await asyncio.to_thread(f.close)


def write_atomic(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file whole or not at all (temporary file, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StagedBlob:
    """A blob written to a temporary file while its digest is computed."""

    def __init__(self, directory: str | Path) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".blob-")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self.hasher = Hasher()

    def _write(self, data: bytes) -> None:
        self.hasher.update(data)
        self._file.write(data)

    async def write_all(self, data: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in data:
                await asyncio.to_thread(self._write, chunk)
            await asyncio.to_thread(self._file.close)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)
