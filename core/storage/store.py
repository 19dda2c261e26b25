"""The image, layer and container store (see :mod:`crio.storage` for the tour)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from crio.errors import (
    NotFoundError,
    StorageError,
    UnsupportedError,
    WrongStateError,
)
from crio.storage import _recordops as ops
from crio.storage._catalog import DeletedImage, _Catalog
from crio.storage._files import LockFile, atomic_write
from crio.storage._layerwrite import Blob, _LayerWriter
from crio.storage._recordfile import RecordFile
from crio.storage.driver import Change, GraphDriver
from crio.storage.imagestores import ImageStore, image_store_paths
from crio.storage.mount import is_mountpoint
from crio.storage.records import Container, Image, Layer

if TYPE_CHECKING:
    from crio.plugins import Plugins

__all__ = ["Blob", "DeletedImage", "Store", "select_driver"]

log = logging.getLogger("crio.storage")

#: Tried in this order when ``storage_driver`` is empty.
DEFAULT_DRIVERS = ("overlay", "vfs")


def select_driver(
    plugins: Plugins,
    root: Path,
    runroot: Path,
    name: str,
    options: Sequence[str],
    image_stores: Sequence[Path | str] = (),
) -> GraphDriver:
    """The driver ``name``; with an empty name the one already used in ``root``,
    else overlay where the kernel supports it, else vfs (and log which).

    :param image_stores: read-only stores (``additionalimagestores``); the
        driver gets each as a ``NAME.imagestore=PATH`` option, as
        containers/storage passes them.
    :raises ConfigError: no plugin provides the driver, or it refuses an option.
    :raises UnsupportedError: the driver cannot work on this host.
    """

    def with_stores(driver: str) -> list[str]:
        return [*options, *(f"{driver}.imagestore={path}" for path in image_stores)]

    if name:
        return plugins.graph_driver(name, root / name, runroot, with_stores(name))
    used = drivers_in_use(root)
    reasons: list[str] = []
    for candidate in used or DEFAULT_DRIVERS:
        try:
            driver = plugins.graph_driver(
                candidate, root / candidate, runroot, with_stores(candidate)
            )
        except UnsupportedError as exc:
            reasons.append(str(exc))
            log.info("storage driver %s is not usable here: %s", candidate, exc)
            continue
        log.info("storage_driver is empty: using %s", candidate)
        return driver
    raise UnsupportedError("no storage driver works on this host: " + "; ".join(reasons))


def drivers_in_use(root: Path) -> list[str]:
    """The drivers whose layer list ``root`` holds (``NAME-layers/layers.json``),
    the default ones first, as containers/storage looks for them."""
    try:
        found = sorted(
            p.name.removesuffix("-layers")
            for p in root.iterdir()
            if p.name.endswith("-layers") and (p / "layers.json").exists()
        )
    except FileNotFoundError:
        return []
    return [n for n in DEFAULT_DRIVERS if n in found] + [
        n for n in found if n not in DEFAULT_DRIVERS
    ]


class Store(_LayerWriter, _Catalog):
    """One open store: ``root`` and ``runroot`` with one graph driver.

    Safe to use from one event loop, alongside other processes (crio, kpod,
    podman, skopeo) using the same directories.
    """

    def __init__(
        self,
        root: Path,
        runroot: Path,
        driver: GraphDriver,
        image_stores: Sequence[ImageStore] = (),
    ) -> None:
        self.root = root
        self.runroot = runroot
        self.driver = driver
        #: Read-only stores whose images this store shows (see :mod:`crio.storage.imagestores`).
        self.image_stores = list(image_stores)
        name = driver.name
        self.layers_dir = root / f"{name}-layers"
        self.images_dir = root / f"{name}-images"
        self.containers_dir = root / f"{name}-containers"
        self.run_layers_dir = runroot / f"{name}-layers"
        self.run_containers_dir = runroot / f"{name}-containers"
        self.incomplete_dir = self.run_layers_dir / "incomplete"
        self._layers = RecordFile(
            self.layers_dir / "layers.json", LockFile.at(self.layers_dir / "layers.lock"), Layer
        )
        self._images = RecordFile(
            self.images_dir / "images.json", LockFile.at(self.images_dir / "images.lock"), Image
        )
        self._containers = RecordFile(
            self.containers_dir / "containers.json",
            LockFile.at(self.containers_dir / "containers.lock"),
            Container,
        )
        self._mounts_lock = LockFile.at(self.run_layers_dir / "mountpoints.lock")
        self._mounts_path = self.run_layers_dir / "mountpoints.json"
        self._closed = False

    # -- opening ---------------------------------------------------------

    @classmethod
    async def open(
        cls,
        root: Path | str,
        runroot: Path | str,
        driver: str = "",
        options: Sequence[str] = (),
        plugins: Plugins | None = None,
        repair: bool = True,
        image_stores: Sequence[Path | str] = (),
    ) -> Store:
        """Open (creating if needed) the store and clean up after crashed writers.

        :param driver: ``storage_driver``; empty picks one (see :func:`select_driver`).
        :param plugins: the plugin host; None loads the ``crio.plugins`` entry points.
        :param repair: False leaves what crashed writers left (``crio check`` reports it).
        :param image_stores: ``additionalimagestores``: read-only stores whose
            images are used in place (``DRIVER.imagestore`` options add more).
            One that cannot be read is reported, not fatal.
        """
        from crio.plugins import Plugins

        root, runroot = Path(root), Path(runroot)
        if plugins is None:
            plugins = Plugins()
            plugins.load_entry_points()
        for path in (root, runroot):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        chosen = select_driver(plugins, root, runroot, driver, options, image_stores)
        shared = [
            ImageStore(path, chosen.name)
            for path in image_store_paths(options, chosen.name, [str(p) for p in image_stores])
        ]
        store = cls(root, runroot, chosen, shared)
        try:
            for ro in shared:
                if not await ro.check():
                    log.info("read-only image store %s (%s)", ro.root, chosen.name)
            for path in (
                store.layers_dir,
                store.images_dir,
                store.containers_dir,
                store.run_layers_dir,
                store.run_containers_dir,
            ):
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
            (root / "storage.lock").touch(exist_ok=True)
            if repair:
                await store.repair()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Release the driver and this store's use of its lock files; the store is
        not used after this."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.driver.cleanup()
        finally:
            for lock in (self._layers.lock, self._images.lock, self._containers.lock):
                lock.close()
            self._mounts_lock.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _locked(
        self, layers: bool = False, images: bool = False, containers: bool = False
    ) -> AsyncIterator[None]:
        """Hold the chosen locks, always in containers/storage's order."""
        async with contextlib.AsyncExitStack() as stack:
            for wanted, records in (
                (layers, self._layers),
                (images, self._images),
                (containers, self._containers),
            ):
                if wanted:
                    await stack.enter_async_context(records.lock.hold())
            yield

    async def repair(self) -> list[str]:
        """Remove what crashed writers left: incomplete layers and unrecorded driver layers.

        Runs on every :meth:`open`; returns the ids removed.
        """
        removed: list[str] = []
        async with (
            self._locked(layers=True, images=True, containers=True),
            self._mounts_lock.hold(),
        ):
            # Every writer of these files holds its lock: a temporary file seen now is left.
            for path in await asyncio.to_thread(self.unfinished_writes):
                log.warning("removing %s, left by a writer that crashed", path)
                path.unlink(missing_ok=True)
        async with self._locked(layers=True):
            layers = self._layers.read()
            for layer in [layer for layer in layers if layer.incomplete]:
                log.warning("removing layer %s left incomplete by a crashed writer", layer.id)
                await self.driver.remove(layer.id)
                self._tar_split_path(layer.id).unlink(missing_ok=True)
                layers = [x for x in layers if x.id != layer.id]
                removed.append(layer.id)
            if removed:
                await asyncio.to_thread(self._layers.write, layers)
            known = {layer.id for layer in layers}
            for layer_id in await self.driver.layers():
                if layer_id in known:
                    continue
                marker = LockFile.at(self.incomplete_dir / f"{layer_id}.lock")
                if not marker.try_acquire():
                    marker.close()
                    continue  # being applied by a live process
                try:
                    log.warning("removing layer %s left half-applied by a crashed writer", layer_id)
                    await self.driver.remove(layer_id)
                    marker.path.unlink(missing_ok=True)
                    removed.append(layer_id)
                finally:
                    marker.release()
                    marker.close()
        return removed

    def unfinished_writes(self) -> list[Path]:
        """Temporary files of :func:`atomic_write` (``.NAME.RANDOM``) in the record
        directories: a crashed writer's, unless one is writing right now."""
        found = []
        directories = [self.layers_dir, self.containers_dir, self.run_layers_dir, self.images_dir]
        with contextlib.suppress(FileNotFoundError):
            directories += [p for p in self.images_dir.iterdir() if p.is_dir()]
        for directory in directories:
            with contextlib.suppress(FileNotFoundError):
                found += [p for p in directory.iterdir() if p.name.startswith(".") and p.is_file()]
        return sorted(found)

    # -- paths -----------------------------------------------------------

    def _tar_split_path(self, layer_id: str) -> Path:
        return self.layers_dir / f"{layer_id}.tar-split.gz"

    def container_dir(self, container_id: str) -> Path:
        """``ROOT/DRIVER-containers/ID/userdata``: a container's persistent files."""
        return self.containers_dir / container_id / "userdata"

    def container_run_dir(self, container_id: str) -> Path:
        """``RUNROOT/DRIVER-containers/ID/userdata``: a container's run-time files."""
        return self.run_containers_dir / container_id / "userdata"

    # -- layers ----------------------------------------------------------

    async def layers(self) -> list[Layer]:
        """Every layer: this store's, then those of the read-only stores."""
        async with self._locked(layers=True):
            own = self._layers.read()
        return await self._with_shared(own, "layers")

    async def layer(self, key: str) -> Layer:
        """A layer by id, name or id prefix. :raises NotFoundError:"""
        return ops.find(await self.layers(), key, "layer")

    async def layers_by_diff_digest(self, digest: str) -> list[Layer]:
        return [layer for layer in await self.layers() if layer.diff_digest == digest]

    async def layers_by_compressed_digest(self, digest: str) -> list[Layer]:
        return [layer for layer in await self.layers() if layer.compressed_digest == digest]

    async def find_layer(self, diff_digest: str, parent: str | None) -> Layer | None:
        """The complete layer with this diff digest on ``parent``, to skip a download."""
        for layer in await self.layers_by_diff_digest(diff_digest):
            if (layer.parent or None) == (parent or None):
                return layer
        return None

    async def delete_layer(self, key: str) -> None:
        """Remove a layer no image, container or other layer uses."""
        async with self._locked(layers=True, images=True, containers=True):
            layers = self._layers.read()
            try:
                layer = ops.find(layers, key, "layer")
            except NotFoundError:
                shared = await self._with_shared(layers, "layers")
                await self._refuse_shared(ops.find(shared, key, "layer").id, "layers")
                raise
            users = [i.id for i in self._images.read() if i.top_layer == layer.id]
            users += [c.id for c in self._containers.read() if c.layer == layer.id]
            users += [x.id for x in layers if x.parent == layer.id]
            if users:
                raise WrongStateError(f"layer {layer.id} is in use by {', '.join(users)}")
            await self._remove_layers([layer.id])

    async def _remove_layers(self, layer_ids: Sequence[str]) -> None:
        """Unmount and remove layers, top first; hold the layers lock."""
        layers = self._layers.read()
        for layer_id in layer_ids:
            await self._unmount_layer(layer_id, force=True)
            await self.driver.remove(layer_id)
            self._tar_split_path(layer_id).unlink(missing_ok=True)
            shutil.rmtree(self.layers_dir / layer_id, ignore_errors=True)
            layers = [x for x in layers if x.id != layer_id]
            await asyncio.to_thread(self._layers.write, layers)

    async def layer_tar(self, key: str) -> AsyncIterator[bytes]:
        """The layer as an uncompressed tar: byte-identical to the applied one when
        its tar-split is kept (so ``diff-digest`` matches), else generated.

        The files are read from the driver's :meth:`~GraphDriver.layer_dir`, or,
        for a driver that keeps them on a device (devicemapper), from the layer
        mounted read-only for the while, as containers/storage does.
        """
        layer = await self.layer(key)
        split_path = await self._shared_tar_split(layer.id) or self._tar_split_path(layer.id)
        if not split_path.exists():
            async for chunk in self.driver.diff(layer.id, layer.parent or None):
                yield chunk
            return
        lines = await asyncio.to_thread(lambda: gzip.decompress(split_path.read_bytes()))
        directory = await self.driver.layer_dir(layer.id)
        mounted = directory is None
        root = await self._mount_layer(layer.id, ["ro"]) if directory is None else directory
        try:

            def opener(name: bytes) -> IO[bytes]:
                from crio.storage.tarapply import clean_name

                return open(root.joinpath(*clean_name(name)), "rb")

            from crio.storage.tarsplit import assemble  # CRC-64 and tar code, on first need

            chunks = assemble(lines, opener)
            while True:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            if mounted:
                await self._unmount_layer(layer.id)

    async def layer_changes(self, key: str) -> Sequence[Change]:
        layer = await self.layer(key)
        return await self.driver.changes(layer.id, layer.parent or None)

    # -- mounts ----------------------------------------------------------

    def _read_mounts(self) -> dict[str, dict[str, object]]:
        try:
            raw = json.loads(self._mounts_path.read_bytes() or b"[]")
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StorageError(f"{self._mounts_path} is damaged: {exc}") from exc
        return {str(m["id"]): m for m in raw if int(m.get("count", 0)) > 0}

    def _write_mounts(self, mounts: dict[str, dict[str, object]]) -> None:
        data = json.dumps(list(mounts.values()), separators=(",", ":")).encode()
        atomic_write(self._mounts_path, data, sync=False)  # runroot: gone at reboot anyway
        self._mounts_lock.touch()

    async def _mount_layer(self, layer_id: str, options: Sequence[str]) -> Path:
        async with self._mounts_lock.hold():
            mounts = self._read_mounts()
            entry = mounts.get(layer_id)
            if entry and await asyncio.to_thread(is_mountpoint, str(entry["path"])):
                entry["count"] = int(entry["count"]) + 1  # type: ignore[call-overload]
                path = Path(str(entry["path"]))
            else:
                path = await self.driver.get(layer_id, options)
                count = int(entry["count"]) if entry else 0  # type: ignore[call-overload]
                mounts[layer_id] = {"id": layer_id, "path": str(path), "count": count + 1}
            await asyncio.to_thread(self._write_mounts, mounts)
            return path

    async def _unmount_layer(self, layer_id: str, force: bool = False) -> int:
        async with self._mounts_lock.hold():
            mounts = self._read_mounts()
            entry = mounts.get(layer_id)
            count = int(entry["count"]) if entry else 0  # type: ignore[call-overload]
            if force or count <= 1:
                await self.driver.put(layer_id)
                mounts.pop(layer_id, None)
                count = 0
            else:
                count -= 1
                entry["count"] = count  # type: ignore[index]
            if entry is not None:
                await asyncio.to_thread(self._write_mounts, mounts)
            return count

    async def mount_count(self, layer_id: str) -> int:
        async with self._mounts_lock.hold():
            entry = self._read_mounts().get(layer_id)
            return int(entry["count"]) if entry else 0  # type: ignore[call-overload]
