"""Durable file writes: temporary file, fsync, rename, fsync of the directory."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["remove_durably", "write_durably"]


def write_durably(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    _sync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Remove ``path`` (absent is fine) and make the removal durable."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
