"""Writing layers: :meth:`Store.start_layer`, :class:`PendingLayer`, :meth:`Store.put_layer`.

A layer is written in three steps, so that a pull can apply the layers of
one image at the same time and still record them parents first:

1. :meth:`~_LayerWriter.start_layer` takes the layer's lock file in
   ``RUNROOT/DRIVER-layers/incomplete`` and makes the empty layer in the
   driver. The layer is not in ``layers.json``.
2. :meth:`PendingLayer.apply` streams a blob into it, verifying its digests.
3. :meth:`PendingLayer.commit` adds it to ``layers.json`` (its parent must be
   there already), or :meth:`PendingLayer.abort` removes its files.

A writer killed anywhere leaves ``layers.json`` as it was (plus complete
layers, parents first); the lock file it held is free, so the next
:meth:`Store.open` removes the driver's files of the layers it left.

With a driver that keeps each layer's diff apart (``parallel_apply``,
overlay), a layer may be started while its parent is itself still being
applied (``parent_pending=True``): only creation order and commit order
follow the parent chain. Other drivers build a layer from its parent's
content (vfs copies it), so their layers start after the parent's commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
from collections.abc import AsyncIterable, Awaitable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

from crio.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, StorageError
from crio.storage import _recordops as ops
from crio.storage._files import LockFile, atomic_write
from crio.storage.records import Layer, now

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from crio.storage._applier import ApplyResult
    from crio.storage._recordfile import RecordFile
    from crio.storage._streams import ReadAhead
    from crio.storage.driver import GraphDriver

__all__ = ["Blob", "PendingLayer", "parallel_apply"]

T = TypeVar("T")

#: What a layer blob is read from.
Blob = bytes | Path | IO[bytes] | AsyncIterable[bytes]


def parallel_apply(driver: GraphDriver) -> bool:
    """Whether ``driver`` applies a layer without its parent's content (see GraphDriver)."""
    return bool(getattr(driver, "parallel_apply", False))


class _LayerWriter:
    """Layer writing for :class:`crio.storage.Store` (which provides the rest)."""

    driver: GraphDriver
    incomplete_dir: Path
    _layers: RecordFile[Layer]

    if TYPE_CHECKING:

        def _locked(
            self, layers: bool = False, images: bool = False, containers: bool = False
        ) -> AbstractAsyncContextManager[None]: ...
        def _tar_split_path(self, layer_id: str) -> Path: ...
        async def _with_shared(self, own: list[Layer], kind: str) -> list[Layer]: ...

    @property
    def parallel_apply(self) -> bool:
        """Whether layers of one image may be applied at the same time
        (:meth:`start_layer` with ``parent_pending``); the driver says."""
        return parallel_apply(self.driver)

    async def start_layer(
        self,
        *,
        parent: str | None = None,
        layer_id: str | None = None,
        diff_digest: str | None = None,
        names: Sequence[str] = (),
        parent_pending: bool = False,
    ) -> PendingLayer:
        """Make an empty layer in the driver, to :meth:`~PendingLayer.apply` a blob into.

        :param diff_digest: the expected uncompressed digest; it fixes the id
            as containers/image does (:func:`~crio.storage._recordops.layer_id_for`).
        :param parent_pending: the parent was started by this process and may
            not be committed yet (it must exist in the driver); only for
            drivers with ``parallel_apply``.
        :returns: the pending layer; when the layer is already complete its
            ``existing`` record is set and there is nothing to apply.
        :raises NotFoundError: the parent is unknown.
        :raises AlreadyExistsError: a name is taken.

        Use the result as an async context manager (or call ``commit``/``abort``):
        it holds the layer's lock file until then.
        """
        if parent_pending and not parallel_apply(self.driver):
            raise StorageError(
                f"storage driver {self.driver.name} builds a layer from its parent's content: "
                "the parent must be complete first"
            )
        if layer_id is None:
            layer_id = ops.layer_id_for(parent, diff_digest) if diff_digest else ops.random_id()
        marker = LockFile.at(self.incomplete_dir / f"{layer_id}.lock")
        try:
            await marker.acquire()
        except BaseException:
            marker.close()
            raise
        pending = PendingLayer(self, layer_id, parent, tuple(names), marker)  # type: ignore[arg-type]
        try:
            async with self._locked(layers=True):
                layers = self._layers.read()
                existing = next((x for x in layers if x.id == layer_id), None)
                if existing is not None:
                    if diff_digest and existing.diff_digest not in ("", diff_digest):
                        raise StorageError(
                            f"layer {layer_id} exists with diff digest {existing.diff_digest}"
                        )
                    pending.existing = existing
                    pending.close()
                    return pending
                # A parent may also be a read-only image store's (a pull on a shared base).
                recorded = not parent or any(
                    x.id == parent for x in await self._with_shared(layers, "layers")
                )
                if not recorded and not (parent_pending and await self.driver.exists(parent)):
                    raise NotFoundError(f"parent layer {parent} not found")
                taken = {n for x in layers for n in x.names}
                if taken & set(names):
                    raise AlreadyExistsError(f"layer name {sorted(taken & set(names))} is in use")
                if await self.driver.exists(layer_id):
                    await self.driver.remove(layer_id)  # a dead writer's leftovers
                pending.created = True  # from here on, abort() removes what create() made
                await self.driver.create(layer_id, parent)
        except BaseException:
            await pending.abort()
            raise
        return pending

    async def put_layer(
        self,
        blob: Blob,
        *,
        parent: str | None = None,
        layer_id: str | None = None,
        diff_digest: str | None = None,
        compressed_digest: str | None = None,
        names: Sequence[str] = (),
    ) -> Layer:
        """Apply a layer blob (plain, gzip or zstd tar) on top of ``parent``.

        :param diff_digest: the expected uncompressed digest (the config's
            ``diff_ids`` entry); verified, and it fixes the id as containers/image
            does (:func:`~crio.storage._recordops.layer_id_for`), so a layer
            already present is returned without reading ``blob``.
        :param compressed_digest: the expected blob digest; verified.
        :returns: the complete layer, with diff and compressed digests and sizes.
        :raises InvalidRequestError: a digest does not match or the tar is refused
            (:class:`~crio.storage.HostileLayerError` names the member).

        While the tar is applied, the layer exists only in the driver, under a
        lock file in ``RUNROOT/DRIVER-layers/incomplete``; it enters
        ``layers.json`` only once complete. A writer killed meanwhile leaves
        nothing visible, and the next :meth:`open` removes its files.
        """
        async with await self.start_layer(
            parent=parent, layer_id=layer_id, diff_digest=diff_digest, names=names
        ) as pending:
            if pending.existing is not None:
                return pending.existing
            await pending.apply(blob, diff_digest=diff_digest, compressed_digest=compressed_digest)
            return await pending.commit()


class PendingLayer:
    """One layer between :meth:`Store.start_layer` and its commit or abort."""

    def __init__(
        self,
        store: _LayerWriter,
        layer_id: str,
        parent: str | None,
        names: tuple[str, ...],
        marker: LockFile,
    ) -> None:
        self.store = store
        self.layer_id = layer_id
        self.parent = parent
        self.names = names
        #: set when the layer was complete already: nothing to apply or commit
        self.existing: Layer | None = None
        #: the layer exists in the driver (and is ours to remove on abort)
        self.created = False
        #: the layer is in ``layers.json`` (set by commit, even if cancelled after)
        self.committed = False
        self._marker: LockFile | None = marker
        self._applied: tuple[Layer, bytes | None] | None = None

    async def __aenter__(self) -> PendingLayer:
        return self

    async def __aexit__(self, kind: object, exc: object, tb: object) -> None:
        if self.created:  # failed, or left without a commit
            await self.abort()
        self.close()

    def close(self) -> None:
        """Release the layer's lock file (done by commit and abort)."""
        marker, self._marker = self._marker, None
        if marker is not None:
            marker.path.unlink(missing_ok=True)
            marker.release()
            marker.close()

    async def abort(self) -> None:
        """Remove what was created of the layer; it never reaches ``layers.json``.

        Runs to its end even when the task is cancelled meanwhile (the layer's
        lock file is held until its files are gone); the cancellation is
        raised afterwards.
        """
        try:
            if self.created:
                self.created = False
                self._applied = None
                with contextlib.suppress(Exception):
                    await _uninterrupted(self.store.driver.remove(self.layer_id))
                self.store._tar_split_path(self.layer_id).unlink(missing_ok=True)
        finally:
            self.close()

    async def apply(
        self,
        blob: Blob,
        *,
        diff_digest: str | None = None,
        compressed_digest: str | None = None,
    ) -> None:
        """Extract ``blob`` into the layer and check its digests.

        :raises InvalidRequestError: a digest does not match, or the blob is
            not a layer (:class:`~crio.storage.LayerFormatError`).
        """
        if not self.created or self._applied is not None:
            raise StorageError(f"layer {self.layer_id} is not waiting for a blob")
        reader, result = await _apply_blob(self.store.driver, self.layer_id, self.parent, blob)
        if diff_digest and reader.diff_digest != diff_digest:
            raise InvalidRequestError(
                f"layer {self.layer_id}: diff digest is {reader.diff_digest}, "
                f"expected {diff_digest}"
            )
        if compressed_digest and reader.compressed_digest != compressed_digest:
            raise InvalidRequestError(
                f"layer {self.layer_id}: blob digest is {reader.compressed_digest}, "
                f"expected {compressed_digest}"
            )
        layer = Layer(
            id=self.layer_id,
            parent=self.parent or "",
            names=self.names,
            created=now(),
            compressed_digest=reader.compressed_digest,
            compressed_size=reader.compressed_size,
            diff_digest=reader.diff_digest,
            diff_size=reader.diff_size,
            compression=reader.compression,
            uids=result.uids,
            gids=result.gids,
        )
        self._applied = (layer, result.tar_split)

    async def commit(self) -> Layer:
        """Record the applied layer in ``layers.json``; its parent must be recorded.

        Once begun, the recording runs to its end even if the task is
        cancelled meanwhile (the cancellation is raised afterwards, with
        :attr:`committed` telling whether the layer made it in).

        :raises NotFoundError: the parent is not (or no longer) in ``layers.json``;
            the layer is then removed.
        """
        if self._applied is None:
            raise StorageError(f"layer {self.layer_id} has no blob applied")
        layer, tar_split = self._applied
        try:
            await _uninterrupted(self._record(layer, tar_split))
        except BaseException:
            if not self.committed:
                await self.abort()
            self.close()
            raise
        self.close()
        return layer

    async def _record(self, layer: Layer, tar_split: bytes | None) -> None:
        store = self.store
        if tar_split is not None:
            data = await asyncio.to_thread(gzip.compress, tar_split, 1)
            await asyncio.to_thread(atomic_write, store._tar_split_path(layer.id), data)
        async with store._locked(layers=True):
            layers = store._layers.read()
            known = await store._with_shared(layers, "layers") if layer.parent else layers
            if layer.parent and not any(x.id == layer.parent for x in known):
                raise NotFoundError(
                    f"parent layer {layer.parent} is not recorded; layer {layer.id} dropped"
                )
            layers.append(layer)
            await asyncio.to_thread(store._layers.write, layers)
        self._applied = None
        self.created = False  # recorded: no longer ours to remove
        self.committed = True


async def _apply_blob(
    driver: GraphDriver, layer_id: str, parent: str | None, blob: Blob
) -> tuple[ReadAhead, ApplyResult]:
    """Stream ``blob`` through hashing and inflating into ``driver.apply_diff``."""
    # Decompression and hashing load with the first layer written, not with the store.
    from crio.storage._streams import BlobChannel, LayerReader, ReadAhead

    pump: asyncio.Task[None] | None = None
    channel: BlobChannel | None = None
    handle: IO[bytes] | None = None
    if isinstance(blob, bytes):
        raw: IO[bytes] = io.BytesIO(blob)
    elif isinstance(blob, Path):
        raw = handle = await asyncio.to_thread(open, blob, "rb")
    elif isinstance(blob, AsyncIterable):
        raw = channel = BlobChannel()
        pump = asyncio.ensure_future(channel.pump(blob))
    else:
        raw = blob
    reader = ReadAhead(LayerReader(raw))
    # The driver applies in a thread, which a cancelled pull cannot interrupt. So on
    # cancellation the reader is stopped (the thread fails at its next read) and the
    # apply is awaited to its end before anything is cleaned up under it.
    apply = asyncio.ensure_future(driver.apply_diff(layer_id, parent, reader))  # type: ignore[arg-type]
    try:
        try:
            result = await asyncio.shield(apply)
        except asyncio.CancelledError:
            reader.stop()
            with contextlib.suppress(BaseException):
                await _uninterrupted(asyncio.wait({apply}))
            if not apply.cancelled():
                apply.exception()  # the cancellation is what the caller sees
            raise
        if pump is not None:
            await pump
    finally:
        if channel is not None:
            channel.close()
        if pump is not None and not pump.done():
            pump.cancel()
        if pump is not None:
            with contextlib.suppress(BaseException):
                await _uninterrupted(asyncio.wait({pump}))
            if not pump.cancelled():
                pump.exception()  # reported through the reader; mark it retrieved
        await _uninterrupted(asyncio.to_thread(reader.close))  # joins the inflating thread
        if handle is not None:
            handle.close()
    return reader, result


async def _uninterrupted(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if this task is cancelled meanwhile, then
    raise the cancellation: for clean-up that must not stop halfway (a task
    can be cancelled more than once, e.g. by a TaskGroup whose tasks fail one
    after another)."""
    task = asyncio.ensure_future(work)
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller sees
        raise asyncio.CancelledError
    return task.result()
