"""The ``GraphDriver`` contract: how a storage plugin keeps layers.

A graph driver stores a tree of layers, each the difference to its parent,
and can present any layer as a directory (``get``). The operations follow
containers/storage's ``graphdriver.Driver`` so that a layer store written by
crio is the one skopeo and podman read. Layer metadata (layers.json,
images.json ...) is core's business (``crio.storage``), not the driver's.

Methods are coroutines; implementations run blocking file work in threads.
Ids are the 64-hex layer ids core chooses.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

__all__ = ["Change", "ChangeKind", "GraphDriver", "WhiteoutFormat"]


class WhiteoutFormat(enum.Enum):
    """How a driver records deletions in an upper layer.

    OVERLAY: a 0/0 character device for a deleted name and the
    ``trusted.overlay.opaque=y`` xattr on an opaque directory (the kernel
    reads them). AUFS: the ``.wh.NAME`` files kept as they are in the tar.
    NONE: the driver holds full copies (vfs, btrfs snapshots), so a
    whiteout is applied by deleting the name from the copy.
    """

    OVERLAY = "overlay"
    AUFS = "aufs"
    NONE = "none"


class ChangeKind(enum.Enum):
    MODIFY = "C"
    ADD = "A"
    DELETE = "D"


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path of a layer against its parent (``kpod diff``)."""

    path: str
    kind: ChangeKind


@runtime_checkable
class GraphDriver(Protocol):
    """One storage driver instance, rooted at ``home`` (e.g. ROOT/overlay)."""

    name: str
    home: Path
    whiteout_format: WhiteoutFormat

    async def status(self) -> Sequence[tuple[str, str]]:
        """Pairs describing the driver's state for ``kpod info`` (backing fs, ...)."""

    async def create(self, layer_id: str, parent: str | None, read_write: bool = False) -> None:
        """Make an empty layer on top of ``parent`` (None: a base layer).

        ``read_write`` marks a container's writable layer.
        """

    async def remove(self, layer_id: str) -> None:
        """Remove a layer and its files; removing an absent layer is not an error."""

    async def exists(self, layer_id: str) -> bool:
        """Whether the driver holds ``layer_id``."""

    async def get(self, layer_id: str, mount_options: Sequence[str] = ()) -> Path:
        """Mount (or otherwise present) the layer with its parents; return the directory.

        Core counts references; each ``get`` is matched by one ``put``.
        """

    async def put(self, layer_id: str) -> None:
        """Undo one ``get``: unmount when the driver needs to."""

    async def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> int:
        """Extract the uncompressed tar stream ``diff`` into the layer.

        Whiteouts are translated into :attr:`whiteout_format`; hostile
        entries are refused (see ``crio.storage.tarapply``).

        :returns: the size in bytes of the applied content.
        """

    def diff(self, layer_id: str, parent: str | None) -> AsyncIterator[bytes]:
        """The layer's changes against ``parent`` as an uncompressed tar stream."""

    async def changes(self, layer_id: str, parent: str | None) -> Sequence[Change]:
        """The layer's changed paths against ``parent``."""

    async def diff_size(self, layer_id: str, parent: str | None) -> int:
        """Bytes the layer adds to ``parent``."""

    async def metadata(self, layer_id: str) -> Mapping[str, str]:
        """Driver details of one layer (for overlay: UpperDir, LowerDir, WorkDir, MergedDir)."""

    async def cleanup(self) -> None:
        """Unmount everything the driver mounted; called when the store closes."""
