"""How a :class:`crio.storage.Store` sees its read-only image stores (split out for size)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from crio.errors import WrongStateError

if TYPE_CHECKING:
    from crio.storage._recordfile import RecordFile
    from crio.storage.imagestores import ImageStore
    from crio.storage.records import Image, Layer, R

__all__ = ["_SharedView"]

Kind = Literal["layers", "images"]


class _SharedView:
    """Records of this store first, then those of each read-only store not shadowed."""

    root: Path
    image_stores: list[ImageStore]
    _layers: RecordFile[Layer]
    _images: RecordFile[Image]

    async def _with_shared(self, own: list[R], kind: Kind) -> list[R]:
        """``own`` (this store's records) and the shared stores' others, in store order."""
        out = list(own)
        seen = {record.id for record in own}
        for shared in self.image_stores:
            records = await (shared.layers() if kind == "layers" else shared.images())
            for record in records:
                if record.id not in seen:
                    seen.add(record.id)
                    out.append(record)  # type: ignore[arg-type]
        return out

    async def _shared_holder(self, kind: Kind, record_id: str) -> ImageStore | None:
        """The read-only store a record comes from; None when this store has it."""
        own = self._layers if kind == "layers" else self._images
        async with own.lock.hold():
            if any(record.id == record_id for record in own.read()):
                return None
        for shared in self.image_stores:
            records = await (shared.layers() if kind == "layers" else shared.images())
            if any(record.id == record_id for record in records):
                return shared
        return None

    async def _shared_tar_split(self, layer_id: str) -> Path | None:
        holder = await self._shared_holder("layers", layer_id)
        return holder.tar_split_path(layer_id) if holder is not None else None

    async def _refuse_shared(self, record_id: str, kind: Kind) -> None:
        """:raises WrongStateError: the record lives in a read-only store."""
        for shared in self.image_stores:
            records = await (shared.layers() if kind == "layers" else shared.images())
            if any(record.id == record_id for record in records):
                what = "layer" if kind == "layers" else "image"
                raise WrongStateError(
                    f"{what} {record_id} is in the read-only image store {shared.root}: "
                    "it cannot be changed or removed from this node"
                )

    async def image_store_of(self, image_id: str) -> Path:
        """The root of the store an image lives in (this store's own root first)."""
        holder = await self._shared_holder("images", image_id)
        return holder.root if holder is not None else self.root
