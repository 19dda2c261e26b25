"""The ``GraphDriver`` contract: how a storage plugin keeps layers.

A graph driver stores a tree of layers, each the difference to its parent,
and can present any layer as a directory (:meth:`GraphDriver.get`). The
operations follow containers/storage's ``graphdriver.Driver`` so that a
layer store written by crio is the one skopeo and podman read. Layer
metadata (``layers.json``, ``images.json`` ...), reference counting of
mounts, locking and digests are core's business (:mod:`crio.storage`), not
the driver's: core calls a driver for one layer at a time and never calls
two mutating methods for the same layer concurrently.

Methods are coroutines; implementations run blocking file work in threads
(``asyncio.to_thread``) so that crio's event loop never blocks. Layer ids
are the 64-hex ids core chooses. A driver keeps everything under ``home``
(``ROOT/NAME``) and run-time state under ``runroot``.

To write a driver, implement this Protocol in a plugin and return an
instance from the ``crio_graph_driver`` hook for your name. The helpers a
driver needs for tars are public: :func:`crio.storage.apply_tar` (safe
extraction with whiteout translation, tar-split) and
:func:`crio.storage.tar_directory` (a tar of a directory's changes).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from crio.storage._applier import ApplyResult

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
    """A change's letter as ``kpod diff`` prints it (Docker's convention)."""

    MODIFY = "C"
    ADD = "A"
    DELETE = "D"


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path of a layer against its parent (``kpod diff``).

    ``path`` is absolute inside the container (``/etc/hosts``).
    """

    path: str
    kind: ChangeKind


@runtime_checkable
class GraphDriver(Protocol):
    """One storage driver instance, rooted at ``home`` (e.g. ROOT/overlay).

    Attributes:
        name: the driver's name as ``storage_driver`` spells it ("overlay").
        home: the driver's directory, ``ROOT/NAME``.
        whiteout_format: how the driver's layer directories record deletions;
            :func:`crio.storage.apply_tar` needs it.
        parallel_apply: optional, False when absent. True says that
            :meth:`create` needs only the parent layer to exist in the driver
            (not its content) and that :meth:`apply_diff` writes the layer's
            own diff without reading its parent's files, as overlay does
            (each layer's diff is a directory of its own). Core then applies
            the layers of one image at the same time, creating and recording
            them in parent order. Drivers that build a layer from its parent's
            content (vfs copies it, btrfs and devicemapper snapshot it) leave
            it False and get their layers one after another.
    """

    name: str
    home: Path
    whiteout_format: WhiteoutFormat

    async def status(self) -> Sequence[tuple[str, str]]:
        """Pairs describing the driver's state for ``kpod info``.

        For example ``[("Backing Filesystem", "extfs"), ("Supports d_type", "true")]``.
        """

    async def create(self, layer_id: str, parent: str | None, read_write: bool = False) -> None:
        """Make an empty layer on top of ``parent`` (None: a base layer).

        :param layer_id: the new layer's id; it does not exist yet in the driver.
        :param parent: an existing layer of this driver, or None.
        :param read_write: the layer is a container's writable layer (no
            diff will be applied; it will be mounted read-write).
        :raises crio.errors.StorageError: the layer could not be made; nothing
            of it is left behind.
        """

    async def remove(self, layer_id: str) -> None:
        """Remove a layer and its files.

        The layer is not mounted (core unmounted it). Removing an absent layer
        is not an error.
        """

    async def exists(self, layer_id: str) -> bool:
        """Whether the driver holds ``layer_id``."""

    async def layers(self) -> Sequence[str]:
        """The ids of every layer the driver holds (for cleaning up after a crash)."""

    async def get(self, layer_id: str, mount_options: Sequence[str] = ()) -> Path:
        """Mount (or otherwise present) the layer with its parents; return the directory.

        :param mount_options: extra options, e.g. ``("ro",)`` for an image's
            top layer; a container's writable layer is mounted read-write.

        Core counts references across processes; a driver's ``get`` is called
        only when the layer is not presented yet, and is matched by one
        :meth:`put`. Calling ``get`` for a layer that is already presented
        returns the same directory without mounting twice.
        """

    async def put(self, layer_id: str) -> None:
        """Undo :meth:`get`: unmount when the driver needs to. Not mounted: no error."""

    async def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> ApplyResult:
        """Extract the uncompressed tar stream ``diff`` into the (empty) layer.

        Read ``diff`` to its end, from a thread (it is a blocking file-like
        object). Whiteouts are translated into :attr:`whiteout_format`;
        hostile members are refused (see :mod:`crio.storage.tarapply`).
        Drivers that keep layers as plain directories call
        :func:`crio.storage.apply_tar`, which does all of that.

        :returns: the applied size and, where the layer's files can be read
            back by name from :meth:`layer_dir`, the tar-split metadata that
            lets core hand out the original tar again.
        :raises crio.storage.HostileLayerError: a member was refused.
        """

    def diff(self, layer_id: str, parent: str | None) -> AsyncIterator[bytes]:
        """The layer's changes against ``parent`` as an uncompressed tar stream.

        Deletions appear as ``.wh.NAME`` members, opaque directories as
        ``.wh..wh..opq``, whatever the driver's own format.
        """

    async def changes(self, layer_id: str, parent: str | None) -> Sequence[Change]:
        """The layer's changed paths against ``parent``, sorted by path."""

    async def diff_size(self, layer_id: str, parent: str | None) -> int:
        """Bytes of file content the layer adds or changes against ``parent``."""

    async def layer_dir(self, layer_id: str) -> Path | None:
        """The directory holding the layer's own files by their archive names.

        Overlay: ``ID/diff``; vfs: the layer's full copy. Core reads a
        layer's original tar back from here with tar-split. None when the
        driver cannot show the files without mounting (devicemapper): core
        then mounts the layer read-only (:meth:`get` with ``("ro",)``) for the
        while and reads them there.
        """

    async def metadata(self, layer_id: str) -> Mapping[str, str]:
        """Driver details of one layer (for overlay: UpperDir, LowerDir, WorkDir, MergedDir)."""

    async def cleanup(self) -> None:
        """Release what the driver holds in this process; called when the store closes.

        Mounts that core still counts stay mounted: other processes may use them.
        """
