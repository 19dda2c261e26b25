"""ImageFsInfo: bytes and inodes the store's layers use, per filesystem."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from crio.api import api_pb2 as api
from crio.server._images import store_of
from crio.server.deps import Deps

__all__ = ["image_fs_info", "usage"]


def usage(root: Path) -> tuple[int, int]:
    """(bytes, inodes) under ``root``, each inode counted once, not crossing mounts."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        device = root.lstat().st_dev
    except FileNotFoundError:
        return 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_dev != device:
                if name in dirnames:
                    dirnames.remove(name)  # a mounted rootfs: not ours to count
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total, len(seen) + 1


async def image_fs_info(deps: Deps, req: api.ImageFsInfoRequest) -> api.ImageFsInfoResponse:
    store = store_of(deps, "ImageFsInfo")
    root = Path(store.root) / store.driver.name
    used, inodes = await asyncio.to_thread(usage, root)
    entry = api.FilesystemUsage(
        timestamp=deps.clock(),
        fs_id=api.FilesystemIdentifier(mountpoint=str(root)),
    )
    entry.used_bytes.value = used
    entry.inodes_used.value = inodes
    return api.ImageFsInfoResponse(image_filesystems=[entry])
