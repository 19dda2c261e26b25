"""Diffs of drivers whose layers are full copies (vfs, btrfs snapshots, devicemapper).

Such a driver does not keep a layer's own files apart from its parent's, so
its diff, changes and diff size come from comparing the two trees, as
containers/storage's ``NaiveDiffDriver`` does. Deletions come out in OCI
form (``.wh.NAME``); a directory that replaced a file comes out as a change.
The trees are read in threads: the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from crio.storage.driver import Change
from crio.storage.tarwrite import changes_against, tar_entries

__all__ = ["naive_changes", "naive_diff", "naive_diff_size"]


async def naive_diff(layer: Path, parent: Path | None) -> AsyncIterator[bytes]:
    """The tar of what ``layer`` adds, changes and deletes against ``parent``."""
    found = await asyncio.to_thread(changes_against, layer, parent)
    chunks: Iterator[bytes] = tar_entries(layer, (entry for entry, _kind in found))
    while True:
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            return
        yield chunk


async def naive_changes(layer: Path, parent: Path | None) -> list[Change]:
    """``kpod diff`` of a full-copy layer against its parent, sorted by path."""
    found = await asyncio.to_thread(changes_against, layer, parent)
    return [Change("/" + entry.path, kind) for entry, kind in found]


async def naive_diff_size(layer: Path, parent: Path | None) -> int:
    """Bytes of regular-file content ``layer`` adds or changes against ``parent``."""

    def total() -> int:
        size = 0
        for entry, _kind in changes_against(layer, parent):
            if entry.whiteout:
                continue
            try:
                st = os.lstat(layer / entry.path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
        return size

    return await asyncio.to_thread(total)
