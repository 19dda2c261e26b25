"""Read-only image stores (containers/storage's ``additionalimagestores``).

Nodes of a cluster can share an image store that one writer fills and many
nodes mount read-only, over NFS say. Each such store is a containers/storage
root of its own (``DRIVER-layers/layers.json``, ``DRIVER-images/images.json``,
``DRIVER/...``) written by crio, kpod, podman or skopeo elsewhere. The node's
store lists its images next to its own, a container of one of them gets its
writable layer in the node's store on top of the shared layers, and nothing
is ever copied or written into a shared store.

A store that vanished, went stale (``ESTALE`` on NFS), holds damaged records,
or stops answering is reported (logged once, and in :attr:`ImageStore.problem`)
and shows no images until it reads again: never fatal. Reads run in a thread
with a deadline, so a hung NFS server blocks one thread, never the event loop.

The records are read without containers/storage's lock files (a read-only
mount cannot take them): the writer replaces each file by an atomic rename,
so a reader sees a whole old or a whole new file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic

from crio.errors import StorageError
from crio.storage.options import driver_options
from crio.storage.records import Image, Layer, R, from_json

__all__ = ["READ_TIMEOUT", "ImageStore", "image_store_paths"]

log = logging.getLogger("crio.storage")

#: How long one read of a shared store may take before it counts as not answering.
READ_TIMEOUT = 10.0


def image_store_paths(options: Sequence[str], driver: str, listed: Sequence[str]) -> list[Path]:
    """The read-only stores: ``[crio] additionalimagestores`` and the driver's
    ``DRIVER.imagestore=PATH[,PATH]`` options, in that order, each once."""
    paths = [Path(p) for p in listed]
    for key, value in driver_options(options, (driver,)):
        if key == "imagestore":
            paths += [Path(p) for p in value.split(",") if p]
    return list(dict.fromkeys(paths))


@dataclass
class _Cached(Generic[R]):
    stamp: tuple[int, int, int] | None = None
    records: list[R] = field(default_factory=list)


class ImageStore:
    """One read-only store, read for one driver's records."""

    def __init__(self, root: Path, driver: str, timeout: float = READ_TIMEOUT) -> None:
        self.root = root
        self.driver = driver
        self.timeout = timeout
        self.layers_path = root / f"{driver}-layers" / "layers.json"
        self.images_path = root / f"{driver}-images" / "images.json"
        #: Why the store shows nothing right now ("" while it reads fine).
        self.problem = ""
        self._layers: _Cached[Layer] = _Cached()
        self._images: _Cached[Image] = _Cached()

    def big_data_path(self, image_id: str, file_name: str) -> Path:
        return self.root / f"{self.driver}-images" / image_id / file_name

    def tar_split_path(self, layer_id: str) -> Path:
        return self.root / f"{self.driver}-layers" / f"{layer_id}.tar-split.gz"

    async def layers(self) -> list[Layer]:
        return await self._read(self.layers_path, Layer, self._layers)

    async def images(self) -> list[Image]:
        return await self._read(self.images_path, Image, self._images)

    async def check(self) -> str:
        """Read both record files now; return the problem ("" when fine)."""
        await self.layers()
        if not self.problem:
            await self.images()
        return self.problem

    async def _read(self, path: Path, cls: type[R], cached: _Cached[R]) -> list[R]:
        try:
            records = await asyncio.wait_for(
                asyncio.to_thread(_load, self, path, cls, cached), self.timeout
            )
        except TimeoutError:
            self._report(f"{path} did not answer in {self.timeout:.0f}s")
            return []
        except OSError as exc:
            self._report(f"{exc.filename or path}: {exc.strerror or exc}")
            return []
        except StorageError as exc:
            self._report(str(exc))
            return []
        if self.problem:
            log.warning("read-only image store %s reads again", self.root)
            self.problem = ""
        return records

    def _report(self, problem: str) -> None:
        if problem != self.problem:
            log.warning(
                "read-only image store %s is unusable (its images are left out): %s",
                self.root,
                problem,
            )
        self.problem = problem


def _load(store: ImageStore, path: Path, cls: type[R], cached: _Cached[R]) -> list[R]:
    """The records of ``path`` in ``store``, from the cache while the file is unchanged.

    :raises OSError: the store cannot be reached (``ESTALE``, ``EIO`` ...).
    :raises StorageError: it is gone, not a store for this driver, or a file is damaged.
    """
    if not store.root.is_dir():
        raise StorageError(f"{store.root} does not exist")
    if not (store.root / f"{store.driver}-layers").is_dir():
        raise StorageError(
            f"{store.root} holds no {store.driver} store (not mounted, or made for another driver)"
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []  # a store without images (yet)
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    if stamp == cached.stamp:
        return list(cached.records)
    data = path.read_bytes()
    try:
        raw = json.loads(data) if data.strip() else []
        if not isinstance(raw, list):
            raise ValueError("not a JSON array")
        records = [from_json(cls, item) for item in raw]
    except (ValueError, TypeError, AttributeError) as exc:
        raise StorageError(f"{path} is damaged: {exc}") from exc
    cached.stamp, cached.records = stamp, records
    return list(records)
