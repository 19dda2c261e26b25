"""containers-storage: sources and destinations in crio's store (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from crio.errors import CrioError, InvalidRequestError, NotFoundError, StorageError, WrongStateError
from crio.image import manifest as mf
from crio.image._io import StagedBlob
from crio.image.convert import render_manifest
from crio.image.digest import DigestMismatchError
from crio.image.reference import Reference, is_image_id, normalize, parse
from crio.image.transport import BlobInfo, LayerCompression, TransportContext
from crio.storage import Blob, LayerFormatError, PendingLayer, Store

__all__ = ["StorageDestination", "StorageSource", "StorageTransport"]

log = logging.getLogger("crio.image.storage")


def _split(reference: str) -> tuple[str, str]:
    """(store spec or "", name)."""
    if reference.startswith("["):
        spec, sep, name = reference[1:].partition("]")
        if not sep:
            raise InvalidRequestError(f"containers-storage:{reference}: unclosed [")
        return spec, name
    return "", reference


async def _open_store(spec: str, context: TransportContext) -> tuple[Store, bool]:
    """The store to use and whether we opened it (and must close it)."""
    if not spec:
        if context.store is None:
            raise InvalidRequestError(
                "containers-storage: no store is open; name one as [DRIVER@ROOT+RUNROOT]"
            )
        return context.store, False
    driver, _, paths = spec.rpartition("@")
    root, _, rest = paths.partition("+")
    runroot = rest.partition(":")[0]
    if not root or not runroot:
        raise InvalidRequestError(f"containers-storage:[{spec}]: expected [DRIVER@ROOT+RUNROOT]")
    if context.store is not None and Path(context.store.root) == Path(root):
        return context.store, False
    return await Store.open(root, runroot, driver), True


def layer_id_for(parent: str | None, diff_id: str) -> str:
    """containers/image's layer id: the first layer's diff_id hex, then
    ``sha256(PARENT + "+" + DIFFHEX)`` (the store computes the same)."""
    hexpart = diff_id.partition(":")[2]
    if not parent:
        return hexpart
    return hashlib.sha256(f"{parent}+{hexpart}".encode()).hexdigest()


def _name(name: str) -> Reference | None:
    if not name or is_image_id(name.lstrip("@")):
        return None
    ref = normalize(parse(name))
    return ref if ref.tag or ref.digest else ref.with_tag("latest")


class StorageDestination:
    supported_manifest_types = (
        mf.OCI_MANIFEST,
        mf.DOCKER_SCHEMA2,
        mf.DOCKER_SCHEMA1_SIGNED,
        mf.DOCKER_SCHEMA1,
    )
    layer_compression = LayerCompression.PRESERVE
    #: put_layer inflates the blob and checks its digest against the diff_id,
    verifies_diff_ids = True
    #: and checks the blob's sha256 digest too (the size: _sized below).
    verifies_blob_digests = True

    def __init__(self, store: Store, owned: bool, ref: Reference | None, tmp_dir: str) -> None:
        self.store = store
        self._owned = owned
        self.ref = ref
        self._tmp_dir = Path(tmp_dir) if tmp_dir else store.runroot
        self._config: bytes = b""
        self._diff_ids: list[str] = []
        #: layer i exists in the driver (or was complete already); its id
        self._created: dict[int, asyncio.Future[str]] = {}
        #: layer i is in layers.json; its id
        self._recorded: dict[int, asyncio.Future[str]] = {}
        self._new_layers: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._staged: list[StagedBlob] = []
        self._manifest: tuple[bytes, str] | None = None
        self._index: bytes = b""
        self._existing: set[str] | None = None
        self._existing_lock = asyncio.Lock()
        self._committed = False

    @staticmethod
    def _future(table: dict[int, asyncio.Future[str]], index: int) -> asyncio.Future[str]:
        if index not in table:
            future = table[index] = asyncio.get_running_loop().create_future()
            # A failed layer's error reaches the copy engine through put_blob;
            # the futures only tell the layers above it.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return table[index]

    def _settle(self, index: int, layer_id: str | None, exc: BaseException | None = None) -> None:
        for table in (self._created, self._recorded):
            future = self._future(table, index)
            if future.done():
                continue
            if exc is not None:
                future.set_exception(exc)
            elif table is self._recorded or layer_id is not None:
                future.set_result(layer_id)  # type: ignore[arg-type]

    def _chain_id(self, index: int) -> str:
        parent: str | None = None
        for diff_id in self._diff_ids[: index + 1]:
            parent = layer_id_for(parent, diff_id)
        assert parent is not None
        return parent

    async def has_blob(self, info: BlobInfo) -> BlobInfo | None:
        if info.index < 0 or not self._diff_ids or info.index >= len(self._diff_ids):
            return None
        async with self._existing_lock:
            if self._existing is None:
                self._existing = {layer.id for layer in await self.store.layers()}
        layer_id = self._chain_id(info.index)
        if layer_id not in self._existing:
            return None
        self._settle(info.index, layer_id)
        return info

    @contextlib.contextmanager
    def _blob_errors(self, info: BlobInfo) -> Iterator[None]:
        """Report what the store refused as a bad blob, naming it."""
        try:
            yield
        except LayerFormatError as exc:
            # The store wraps what the blob stream raised; the copy engine's own
            # error (a digest mismatch naming the blob) is the one to report.
            cause = exc.__cause__
            if isinstance(cause, CrioError) and not isinstance(cause, LayerFormatError):
                raise cause from None
            raise DigestMismatchError(
                f"layer blob {info.digest} (layer {info.index + 1}): {exc}"
            ) from None
        except InvalidRequestError as exc:
            if "digest" not in str(exc) or isinstance(exc, DigestMismatchError):
                raise
            raise DigestMismatchError(
                f"layer blob {info.digest} (layer {info.index + 1}): {exc}"
            ) from None

    async def _sized(self, info: BlobInfo, data: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``data``, stopped as soon as it runs past the blob's size."""
        done = 0
        async for chunk in data:
            done += len(chunk)
            if 0 <= info.size < done:
                raise DigestMismatchError(
                    f"layer blob {info.digest} (layer {info.index + 1}): "
                    f"more than the {info.size} bytes expected"
                )
            yield chunk

    async def _commit(self, pending: PendingLayer) -> None:
        try:
            await pending.commit()
        finally:  # a commit that completed counts even if this task was cancelled meanwhile
            if pending.committed:
                self._new_layers.append(pending.layer_id)

    async def _apply(self, info: BlobInfo, blob: Blob) -> str:
        """Apply a layer whose parent is recorded (one layer after another)."""
        parent = await self._future(self._recorded, info.index - 1) if info.index > 0 else None
        diff_id = info.diff_id or None
        async with await self.store.start_layer(parent=parent, diff_digest=diff_id) as pending:
            if pending.existing is None:
                with self._blob_errors(info):
                    await pending.apply(blob, diff_digest=diff_id, compressed_digest=info.digest)
                await self._commit(pending)
        return pending.layer_id

    async def _apply_staged(self, info: BlobInfo, staged: StagedBlob) -> None:
        try:
            self._settle(info.index, await self._apply(info, staged.path))
        except BaseException as exc:
            self._settle(info.index, None, exc)
            raise
        finally:
            staged.discard()

    async def _apply_parallel(self, info: BlobInfo, data: AsyncIterator[bytes]) -> None:
        """Apply a layer while the layers below it are still being applied.

        Created once its parent exists in the driver, applied at once,
        committed once its parent is committed: ``layers.json`` only ever
        holds complete layers, parents first.
        """
        index = info.index
        parent = await self._future(self._created, index - 1) if index > 0 else None
        pending = await self.store.start_layer(
            parent=parent, diff_digest=info.diff_id, parent_pending=True
        )
        async with pending:
            if pending.existing is not None:  # another pull stored it meanwhile
                self._settle(index, pending.layer_id)
                return
            self._future(self._created, index).set_result(pending.layer_id)
            with self._blob_errors(info):
                await pending.apply(
                    self._sized(info, data), diff_digest=info.diff_id, compressed_digest=info.digest
                )
            if index > 0:
                await self._future(self._recorded, index - 1)
            await self._commit(pending)
        self._settle(index, pending.layer_id)

    async def put_blob(self, info: BlobInfo, data: AsyncIterator[bytes]) -> BlobInfo:
        if info.index < 0:
            parts = [chunk async for chunk in data]
            self._config = b"".join(parts)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self._diff_ids = list(json.loads(self._config)["rootfs"]["diff_ids"])
            return info
        self._future(self._recorded, info.index)  # commit() waits for every layer put
        if (
            self.store.parallel_apply
            and info.diff_id
            and info.index < len(self._diff_ids)
            and self._diff_ids[info.index] == info.diff_id
        ):
            try:
                await self._apply_parallel(info, data)
            except BaseException as exc:
                self._settle(info.index, None, exc)
                raise
            return info
        recorded = self._recorded.get(info.index - 1)
        if info.index == 0 or (recorded is not None and recorded.done()):
            try:
                self._settle(info.index, await self._apply(info, data))
            except BaseException as exc:
                self._settle(info.index, None, exc)
                raise
            return info
        # The parent is still on its way: keep the bytes, apply them once it is in.
        staged = StagedBlob(self._tmp_dir)
        self._staged.append(staged)
        await staged.write_all(data)
        task = asyncio.create_task(self._apply_staged(info, staged))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._tasks.append(task)
        return info

    async def put_index(self, index: bytes, media_type: str) -> None:
        self._index = index

    async def put_manifest(self, manifest: bytes, media_type: str) -> None:
        self._manifest = (manifest, media_type)

    async def put_signatures(self, signatures: Sequence[bytes]) -> None:
        return None  # kept by the lookaside store, not in the image record

    async def commit(self) -> str:
        if self._manifest is None or not self._config:
            raise StorageError("commit before the manifest and config were written")
        manifest, media_type = self._manifest
        top = None
        if self._recorded:
            for index in range(len(self._recorded)):
                if index not in self._recorded:
                    raise StorageError(f"layer {index + 1} was never written")
                top = await self._recorded[index]
        names = [str(self.ref)] if self.ref else []
        image = await self.store.create_image(
            config=self._config,
            top_layer=top,
            manifest=manifest,
            manifest_digest=mf.manifest_digest(manifest, media_type),
            names=names,
        )
        if self._index:
            index_digest = mf.manifest_digest(self._index)
            await self.store.set_image_big_data(image.id, f"manifest-{index_digest}", self._index)
        self._committed = True
        return image.id

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        for staged in self._staged:
            staged.discard()
        if not self._committed:
            for layer_id in reversed(self._new_layers):
                try:
                    await self.store.delete_layer(layer_id)
                except (WrongStateError, NotFoundError) as exc:
                    log.info("kept layer %s after a failed pull: %s", layer_id, exc)
        if self._owned:
            await self.store.close()


class StorageSource:
    def __init__(self, store: Store, owned: bool, key: str, reference: str) -> None:
        self.store = store
        self._owned = owned
        self.key = key
        self.reference = reference
        self.docker_reference: Reference | None = None
        self._image_id = ""
        self._manifest: tuple[bytes, str] | None = None
        self._layers: dict[str, str] = {}  # diff digest -> layer id
        self._config_digest = ""

    async def _load(self) -> None:
        if self._image_id:
            return
        image = await self.store.image(self.key)
        self._image_id = image.id
        self._config_digest = "sha256:" + image.id
        layers = await self.store.image_layers(image.id)
        self._layers = {layer.diff_digest: layer.id for layer in layers}
        if self.docker_reference is None:
            with contextlib.suppress(CrioError):
                named = next((n for n in image.names if "@" not in n), "")
                self.docker_reference = normalize(parse(named)) if named else None
        try:
            data = await self.store.image_manifest(image.id)
            self._manifest = (data, mf.guess_media_type(data))
        except NotFoundError:
            config = await self.store.image_config(image.id)
            built = mf.ImageManifest(
                mf.OCI_MANIFEST,
                mf.Descriptor(mf.OCI_CONFIG, self._config_digest, len(config)),
                tuple(mf.Descriptor(mf.OCI_LAYER, x.diff_digest, -1) for x in layers),
            )
            self._manifest = (render_manifest(built), mf.OCI_MANIFEST)
        self._order = [layer.diff_digest for layer in layers]

    async def manifest(self, instance_digest: str | None = None) -> tuple[bytes, str]:
        await self._load()
        assert self._manifest is not None
        return self._manifest

    async def layer_infos(self) -> Sequence[BlobInfo] | None:
        await self._load()
        assert self._manifest is not None
        kind = self._manifest[1]
        media_type = mf.OCI_LAYER if kind == mf.OCI_MANIFEST else mf.DOCKER_LAYER_TAR
        return [BlobInfo(d, -1, media_type, d, i) for i, d in enumerate(self._order)]

    async def blob(self, info: BlobInfo) -> AsyncIterator[bytes]:
        await self._load()
        if info.digest == self._config_digest:
            yield await self.store.image_config(self._image_id)
            return
        layer_id = self._layers.get(info.digest)
        if layer_id is None:
            raise NotFoundError(
                f"image {self._image_id} has no layer with diff digest {info.digest}"
            )
        async for chunk in self.store.layer_tar(layer_id):
            yield chunk

    async def signatures(self, instance_digest: str | None = None) -> Sequence[bytes]:
        return ()

    async def close(self) -> None:
        if self._owned:
            await self.store.close()


class StorageTransport:
    name = "containers-storage"

    def validate_reference(self, reference: str) -> str:
        spec, name = _split(reference)
        ref = _name(name)
        shown = str(ref) if ref else name.lstrip("@")
        return f"[{spec}]{shown}" if spec else shown

    def policy_identity(self, reference: str) -> str:
        return self.validate_reference(reference)

    async def open_source(self, reference: str, context: TransportContext) -> StorageSource:
        spec, name = _split(reference)
        if not name:
            raise InvalidRequestError(f"containers-storage:{reference}: no image named")
        store, owned = await _open_store(spec, context)
        ref = _name(name)
        source = StorageSource(
            store, owned, str(ref) if ref else name.lstrip("@"), f"containers-storage:{reference}"
        )
        source.docker_reference = ref
        return source

    async def open_destination(
        self, reference: str, context: TransportContext
    ) -> StorageDestination:
        spec, name = _split(reference)
        store, owned = await _open_store(spec, context)
        return StorageDestination(store, owned, _name(name), context.tmp_dir)
