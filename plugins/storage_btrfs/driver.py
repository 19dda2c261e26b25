"""The btrfs graph driver, in containers/storage's on-disk layout.

``home`` is ``ROOT/btrfs`` and must be on a btrfs file system::

    subvolumes/ID   one subvolume per layer: a base layer is a new subvolume,
                    a child layer a snapshot of its parent, a container's
                    layer a writable snapshot of the image's top layer
    quotas/ID       the qgroup limit (bytes, as text) of a size-limited layer

Layers are full copies sharing extents, so their diffs come from comparing
with the parent (:mod:`crio.storage.naivediff`) and whiteouts delete from the
copy. An image layer is made read-only once its diff is applied: a
read-only mount of an image (``kpod mount IMAGE``) cannot change it, and
skopeo and podman, which snapshot it, never write to it either. Presenting a
layer (:meth:`BtrfsDriver.get`) needs no mount.

Options (``storage_option``, prefix ``btrfs.``):

* ``btrfs.size=SIZE``: a qgroup limit on every container layer (what the
  rootfs may refer to, image included);
* ``btrfs.min_space=SIZE``: turns qgroups on, and refuses a smaller size.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from crio.errors import ConfigError, StorageError, UnsupportedError
from crio.storage._applier import ApplyResult, apply_tar
from crio.storage.driver import Change, WhiteoutFormat
from crio.storage.mount import BTRFS_MAGIC, fs_magic
from crio.storage.naivediff import naive_changes, naive_diff, naive_diff_size
from crio.storage.options import OPTION_KEY, driver_options, parse_size
from crio.storage.tarapply import ApplyPolicy
from crio_plugins.storage_btrfs import ioctl

__all__ = ["BtrfsDriver", "btrfs_supported"]

log = logging.getLogger("crio.storage.btrfs")

NAME = "btrfs"
#: containers/storage makes a new base subvolume r-x for everyone.
BASE_MODE = 0o555
_NO_LIMIT = (1 << 64) - 1


def btrfs_supported(path: Path) -> tuple[bool, str]:
    """Whether ``path`` (or its nearest existing parent) is on btrfs; the reason when not."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        magic = fs_magic(probe)
    except OSError as exc:
        return False, f"cannot statfs {probe}: {exc.strerror}"
    if magic != BTRFS_MAGIC:
        return False, f"{path} is not on a btrfs file system (f_type {magic:#x})"
    return True, ""


class BtrfsDriver:
    """Layers as btrfs subvolumes and snapshots (see the module docstring)."""

    name = NAME
    whiteout_format = WhiteoutFormat.NONE

    def __init__(self, home: Path, runroot: Path, options: Sequence[str] = ()) -> None:
        self.home = home
        self.size = 0
        self.min_space = 0
        for key, value in driver_options(options, (NAME,)):
            if key == "size":
                self.size = parse_size(value, "btrfs.size")
            elif key == "min_space":
                self.min_space = parse_size(value, "btrfs.min_space")
            elif key == "imagestore":
                raise ConfigError(
                    "additionalimagestores: a btrfs layer is a snapshot of its parent, which "
                    "must be on the same file system; use overlay or vfs for read-only "
                    "image stores",
                    key=OPTION_KEY,
                )
            elif key == "mountopt":
                raise ConfigError(
                    "storage option btrfs.mountopt: the btrfs driver mounts nothing",
                    key=OPTION_KEY,
                )
            else:
                raise ConfigError(
                    f"unknown btrfs option {key!r} (known: btrfs.size, btrfs.min_space)",
                    key=OPTION_KEY,
                )
        if self.size and self.size < self.min_space:
            raise ConfigError(
                f"storage option btrfs.size: {self.size} bytes is less than "
                f"btrfs.min_space ({self.min_space} bytes)",
                key=OPTION_KEY,
            )
        supported, why = btrfs_supported(home)
        if not supported:
            raise UnsupportedError(f"storage driver btrfs: {why}")
        self.subvolumes = home / "subvolumes"
        self.quotas = home / "quotas"
        self.subvolumes.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.size or self.min_space:
            try:
                if not ioctl.quota_enabled(home):
                    ioctl.enable_quota(home)
            except OSError as exc:
                raise UnsupportedError(
                    f"storage driver btrfs: cannot turn on qgroups on {home}: {exc.strerror}"
                ) from exc

    # -- paths -----------------------------------------------------------

    def _dir(self, layer_id: str) -> Path:
        if len(layer_id) != 64 or not all(c in "0123456789abcdef" for c in layer_id):
            raise StorageError(f"btrfs: {layer_id!r} is not a layer id")
        return self.subvolumes / layer_id

    # -- GraphDriver -----------------------------------------------------

    async def status(self) -> Sequence[tuple[str, str]]:
        quotas = await asyncio.to_thread(ioctl.quota_enabled, self.home)
        return [
            ("Backing Filesystem", "btrfs"),
            ("Qgroups", "enabled" if quotas else "disabled"),
            ("Container Size Limit", str(self.size) if self.size else "none"),
        ]

    async def create(self, layer_id: str, parent: str | None, read_write: bool = False) -> None:
        await asyncio.to_thread(self._create, layer_id, parent, read_write)

    def _create(self, layer_id: str, parent: str | None, read_write: bool) -> None:
        path = self._dir(layer_id)
        if path.exists():
            raise StorageError(f"btrfs: layer {layer_id} already exists")
        try:
            if parent:
                source = self._dir(parent)
                if not source.is_dir():
                    raise StorageError(f"btrfs: parent layer {parent} does not exist")
                ioctl.snapshot(source, self.subvolumes, layer_id)
            else:
                ioctl.create_subvolume(self.subvolumes, layer_id)
                os.chmod(path, BASE_MODE)
        except OSError as exc:
            raise StorageError(f"btrfs: creating layer {layer_id}: {exc}") from exc
        if read_write and self.size:
            try:
                ioctl.limit_qgroup(path, self.size)
                self.quotas.mkdir(exist_ok=True, mode=0o700)
                (self.quotas / layer_id).write_text(str(self.size))
            except OSError as exc:
                self._remove(layer_id)
                raise StorageError(f"btrfs: limiting layer {layer_id}: {exc}") from exc

    async def remove(self, layer_id: str) -> None:
        await asyncio.to_thread(self._remove, layer_id)

    def _remove(self, layer_id: str) -> None:
        path = self._dir(layer_id)
        if not os.path.lexists(path):
            (self.quotas / layer_id).unlink(missing_ok=True)
            return
        subvolume = 0
        try:
            if ioctl.is_subvolume(path):
                subvolume = ioctl.subvolume_id(path)
                if (self.quotas / layer_id).exists():
                    # A full qgroup refuses even the deletions that would free it.
                    ioctl.limit_qgroup(path, _NO_LIMIT)
                _destroy_nested(path)
                ioctl.destroy_subvolume(self.subvolumes, layer_id)
            else:
                shutil.rmtree(path)  # not a subvolume: left by another tool
        except OSError as exc:
            raise StorageError(f"btrfs: removing layer {layer_id} ({path}): {exc}") from exc
        (self.quotas / layer_id).unlink(missing_ok=True)
        if subvolume and ioctl.quota_enabled(self.home):
            try:
                ioctl.destroy_qgroup(self.home, subvolume)
            except OSError as exc:
                # EBUSY until the cleaner has freed the extents: the qgroup is
                # then stale (``btrfs qgroup clear-stale`` drops it).
                log.debug("btrfs: qgroup 0/%d of layer %s stays: %s", subvolume, layer_id, exc)

    async def exists(self, layer_id: str) -> bool:
        return self._dir(layer_id).is_dir()

    async def layers(self) -> Sequence[str]:
        def scan() -> list[str]:
            return [
                e.name
                for e in os.scandir(self.subvolumes)
                if len(e.name) == 64 and e.is_dir(follow_symlinks=False)
            ]

        return await asyncio.to_thread(scan)

    async def get(self, layer_id: str, mount_options: Sequence[str] = ()) -> Path:
        path = self._dir(layer_id)
        unknown = [o for o in mount_options if o not in ("ro", "rw")]
        if unknown:
            raise StorageError(f"btrfs: layer {layer_id}: mount options {unknown} are not known")
        if not path.is_dir():
            raise StorageError(f"btrfs: layer {layer_id} does not exist")
        return path

    async def put(self, layer_id: str) -> None:
        return None  # nothing was mounted

    async def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> ApplyResult:
        path = self._dir(layer_id)
        policy = ApplyPolicy(WhiteoutFormat.NONE, allow_devices=os.geteuid() == 0)
        result = await asyncio.to_thread(apply_tar, path, diff, policy)
        try:
            await asyncio.to_thread(ioctl.set_read_only, path)
        except OSError as exc:
            raise StorageError(f"btrfs: sealing layer {layer_id}: {exc}") from exc
        return result

    async def diff(self, layer_id: str, parent: str | None) -> AsyncIterator[bytes]:
        base = self._dir(parent) if parent else None
        async for chunk in naive_diff(self._dir(layer_id), base):
            yield chunk

    async def changes(self, layer_id: str, parent: str | None) -> Sequence[Change]:
        return await naive_changes(self._dir(layer_id), self._dir(parent) if parent else None)

    async def diff_size(self, layer_id: str, parent: str | None) -> int:
        return await naive_diff_size(self._dir(layer_id), self._dir(parent) if parent else None)

    async def layer_dir(self, layer_id: str) -> Path | None:
        return self._dir(layer_id)

    async def metadata(self, layer_id: str) -> Mapping[str, str]:
        path = self._dir(layer_id)
        found = {"Path": str(path)}
        with contextlib.suppress(FileNotFoundError):
            found["Size Limit"] = (self.quotas / layer_id).read_text().strip()
        return found

    async def cleanup(self) -> None:
        return None


def _destroy_nested(path: Path) -> None:
    """Delete the subvolumes below ``path``, deepest first (a subvolume holding
    another cannot be deleted); a container may have made them."""
    nested: list[Path] = []
    for folder, dirs, _files in os.walk(path):
        for name in dirs:
            child = Path(folder) / name
            try:
                if ioctl.is_subvolume(child):
                    nested.append(child)
            except FileNotFoundError:
                continue
    for child in sorted(nested, key=lambda p: len(p.parts), reverse=True):
        try:
            ioctl.destroy_subvolume(child.parent, child.name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
