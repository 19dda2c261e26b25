"""The devicemapper graph driver: one thin device per layer, in containers/storage's layout.

A layer is a snapshot of its parent's thin device holding a whole
filesystem, so its diff comes from comparing the two (mounted) trees. A
layer is mounted at ``ROOT/devicemapper/mnt/ID`` with its files in
``rootfs/`` (and an ``id`` file beside it), as containers/storage does, so
podman mounts the same devices. The driver's own short mounts (applying a
diff, comparing trees) go to private mount points under the run root.

Options (``storage_option``, prefix ``dm.`` or ``devicemapper.``), with
containers/storage's meaning and defaults: ``dm.thinpooldev`` (use this pool,
else one on loop files of ``dm.loopdatasize`` 100G and ``dm.loopmetadatasize``
2G), ``dm.basesize`` (10G: every device's size), ``dm.fs`` (``xfs`` where
available, else ``ext4``), ``dm.mkfsarg``, ``dm.mountopt``, ``dm.blocksize``
(64K), ``dm.use_deferred_removal`` and ``dm.use_deferred_deletion`` (true),
``dm.min_free_space`` (10%).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from crio.errors import ConfigError, StorageError, UnsupportedError
from crio.storage import mount as m
from crio.storage._applier import ApplyResult, apply_tar
from crio.storage.driver import Change, WhiteoutFormat
from crio.storage.naivediff import naive_changes, naive_diff, naive_diff_size
from crio.storage.options import OPTION_KEY, driver_options, parse_size
from crio.storage.tarapply import ApplyPolicy
from crio_plugins.storage_devicemapper import dm
from crio_plugins.storage_devicemapper.deviceset import DeviceSet, Settings, devicemapper_missing
from crio_plugins.storage_devicemapper.metadata import DeviceInfo

__all__ = ["DevmapperDriver", "parse_settings"]

NAME = "devicemapper"
PREFIXES = ("dm", "devicemapper")


def _bool(key: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(
        f"storage option dm.{key}: got {value!r}, expected true or false", key=OPTION_KEY
    )


def parse_settings(options: Sequence[str]) -> Settings:
    """The ``dm.*`` options as :class:`Settings`. :raises ConfigError: one that is wrong."""
    found: dict[str, object] = {}
    mkfs: list[str] = []
    mount: list[str] = []
    sizes = {"basesize": "base_size", "loopdatasize": "loop_data_size",
             "loopmetadatasize": "loop_metadata_size"}  # fmt: skip
    for key, value in driver_options(options, PREFIXES):
        if key in sizes:
            found[sizes[key]] = parse_size(value, f"dm.{key}")
        elif key == "fs":
            if value not in ("ext4", "xfs"):
                raise ConfigError(f"storage option dm.fs: got {value!r}, expected ext4 or xfs",
                                  key=OPTION_KEY)  # fmt: skip
            found["filesystem"] = value
        elif key == "mkfsarg":
            mkfs.append(value)
        elif key == "mountopt":
            mount += [o for o in value.split(",") if o]
        elif key == "thinpooldev":
            found["thin_pool"] = value.removeprefix("/dev/mapper/")
        elif key == "blocksize":
            size = parse_size(value, "dm.blocksize")
            if size < 64 << 10 or size % (64 << 10):
                raise ConfigError("storage option dm.blocksize: must be a multiple of 64K",
                                  key=OPTION_KEY)  # fmt: skip
            found["block_sectors"] = size // dm.SECTOR
        elif key in ("use_deferred_removal", "use_deferred_deletion"):
            found[key.removeprefix("use_")] = _bool(key, value)
        elif key == "min_free_space":
            number = value.removesuffix("%")
            if not value.endswith("%") or not number.isdigit() or int(number) >= 100:
                raise ConfigError(f"storage option dm.min_free_space: got {value!r}, expected "
                                  "a percentage below 100 such as 10%", key=OPTION_KEY)  # fmt: skip
            found["min_free_percent"] = int(number)
        elif key == "imagestore":
            raise ConfigError("additionalimagestores: a devicemapper layer is a snapshot in "
                              "the node's thin pool; use overlay or vfs for read-only image "
                              "stores", key=OPTION_KEY)  # fmt: skip
        else:
            raise ConfigError(f"unknown devicemapper option dm.{key}", key=OPTION_KEY)
    if found.get("deferred_removal") is False:
        if found.get("deferred_deletion") is True:
            raise ConfigError("storage option dm.use_deferred_deletion needs "
                              "dm.use_deferred_removal", key=OPTION_KEY)  # fmt: skip
        found["deferred_deletion"] = False  # deletion waits on removal
    settings = Settings(mkfs_args=tuple(mkfs), mount_options=tuple(mount))
    return Settings(**{**_as_dict(settings), **found})


def _as_dict(settings: Settings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in Settings.__slots__}  # type: ignore[attr-defined]


class DevmapperDriver:
    """Layers as thin devices (see the module docstring)."""

    name = NAME
    whiteout_format = WhiteoutFormat.NONE

    def __init__(self, home: Path, runroot: Path, options: Sequence[str] = ()) -> None:
        settings = parse_settings(options)
        missing = devicemapper_missing()
        if missing:
            raise UnsupportedError(f"storage driver devicemapper: {missing}")
        self.home = home
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.devices = DeviceSet(home, settings)
        self.scratch = runroot / NAME / "tmp"

    def _info(self, layer_id: str) -> DeviceInfo:
        if len(layer_id) != 64 or not all(c in "0123456789abcdef" for c in layer_id):
            raise StorageError(f"devicemapper: {layer_id!r} is not a layer id")
        info = self.devices.load(layer_id)
        if info is None or info.deleted:
            raise StorageError(f"devicemapper: layer {layer_id} does not exist")
        return info

    # -- mounting --------------------------------------------------------------

    async def _mount(self, info: DeviceInfo, target: Path, options: Sequence[str]) -> None:
        device = await self.devices.activate(info)
        fs = self.devices.info.base_filesystem or "ext4"
        flags, data = m.split_options(
            [*(["nouuid"] if fs == "xfs" else []), *self.devices.settings.mount_options, *options]
        )
        target.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            await asyncio.to_thread(m.mount, device, target, fs, flags, data)
        except OSError as exc:
            await self.devices.deactivate(info)
            raise StorageError(f"devicemapper: mounting layer {info.hash}: {exc}") from exc

    async def _unmount(self, info: DeviceInfo, target: Path) -> None:
        await asyncio.to_thread(m.unmount, target)
        with contextlib.suppress(OSError):
            target.rmdir()  # as containers/storage: other namespaces drop their copies too
        await self.devices.deactivate(info)

    @contextlib.asynccontextmanager
    async def _presented(self, layer_id: str, read_only: bool) -> AsyncIterator[Path]:
        """The layer's files on a private, short-lived mount (not the one core counts)."""
        info = self._info(layer_id)
        target = self.scratch / f"{layer_id}-{secrets.token_hex(4)}"
        await self._mount(info, target, ["ro"] if read_only else [])
        try:
            root = target / "rootfs"
            if not read_only:
                root.mkdir(mode=0o755, exist_ok=True)
            yield root
        finally:
            await self._unmount(info, target)

    # -- GraphDriver -----------------------------------------------------------

    async def status(self) -> Sequence[tuple[str, str]]:
        await self.devices.ready()
        pool = await self.devices.pool_status()
        base = self.devices.load("")
        found = [
            ("Pool Name", self.devices.pool),
            ("Pool Blocksize", str(pool.block_bytes)),
            ("Base Device Size", str(base.size if base else 0)),
            ("Backing Filesystem", self.devices.info.base_filesystem),
            ("Data Space Used", str(pool.data_used * pool.block_bytes)),
            ("Data Space Total", str(pool.data_total * pool.block_bytes)),
            ("Metadata Space Used", str(pool.metadata_used * 4096)),
            ("Metadata Space Total", str(pool.metadata_total * 4096)),
            ("Deferred Removal Enabled", str(self.devices.settings.deferred_removal).lower()),
            ("Deferred Deletion Enabled", str(self.devices.settings.deferred_deletion).lower()),
        ]
        if not self.devices.settings.thin_pool:
            found += [("Data loop file", str(self.devices.loop_dir / "data")),
                      ("Metadata loop file", str(self.devices.loop_dir / "metadata"))]  # fmt: skip
        return found

    async def create(self, layer_id: str, parent: str | None, read_write: bool = False) -> None:
        if len(layer_id) != 64 or not all(c in "0123456789abcdef" for c in layer_id):
            raise StorageError(f"devicemapper: {layer_id!r} is not a layer id")
        await self.devices.add(layer_id, parent or "")

    async def remove(self, layer_id: str) -> None:
        await self.devices.ready()
        info = self.devices.load(layer_id)
        target = self.home / "mnt" / layer_id
        if await asyncio.to_thread(m.is_mountpoint, target):
            await asyncio.to_thread(m.unmount, target)
        # A private mount a killed writer left (it died applying a diff).
        for stale in self.scratch.glob(f"{layer_id}-*") if self.scratch.is_dir() else ():
            await asyncio.to_thread(m.unmount, stale)
            with contextlib.suppress(OSError):
                stale.rmdir()
        async with self.devices.lock:
            if info is not None and not info.deleted:
                await self.devices.delete(info)
        with contextlib.suppress(FileNotFoundError):
            for leftover in target.iterdir():
                leftover.unlink()
        with contextlib.suppress(FileNotFoundError, OSError):
            target.rmdir()

    async def exists(self, layer_id: str) -> bool:
        info = self.devices.load(layer_id)
        return info is not None and not info.deleted

    async def layers(self) -> Sequence[str]:
        await self.devices.ready()
        return [i.hash for i in self.devices.devices() if i.hash and not i.deleted]

    async def get(self, layer_id: str, mount_options: Sequence[str] = ()) -> Path:
        await self.devices.ready()
        info = self._info(layer_id)
        target = self.home / "mnt" / layer_id
        if not await asyncio.to_thread(m.is_mountpoint, target):
            await self._mount(info, target, mount_options)
        root = target / "rootfs"
        if not root.is_dir():
            root.mkdir(mode=0o755)
        if not (target / "id").exists() and "ro" not in mount_options:
            (target / "id").write_text(layer_id)
        return root

    async def put(self, layer_id: str) -> None:
        info = self.devices.load(layer_id)
        target = self.home / "mnt" / layer_id
        if info is not None and await asyncio.to_thread(m.is_mountpoint, target):
            await self._unmount(info, target)

    async def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> ApplyResult:
        policy = ApplyPolicy(WhiteoutFormat.NONE, allow_devices=os.geteuid() == 0)
        async with self._presented(layer_id, read_only=False) as root:
            return await asyncio.to_thread(apply_tar, root, diff, policy)

    async def _trees(
        self, stack: contextlib.AsyncExitStack, layer_id: str, parent: str | None
    ) -> tuple[Path, Path | None]:
        root = await stack.enter_async_context(self._presented(layer_id, True))
        if not parent:
            return root, None
        return root, await stack.enter_async_context(self._presented(parent, True))

    async def diff(self, layer_id: str, parent: str | None) -> AsyncIterator[bytes]:
        async with contextlib.AsyncExitStack() as stack:
            async for chunk in naive_diff(*await self._trees(stack, layer_id, parent)):
                yield chunk

    async def changes(self, layer_id: str, parent: str | None) -> Sequence[Change]:
        async with contextlib.AsyncExitStack() as stack:
            return await naive_changes(*await self._trees(stack, layer_id, parent))

    async def diff_size(self, layer_id: str, parent: str | None) -> int:
        async with contextlib.AsyncExitStack() as stack:
            return await naive_diff_size(*await self._trees(stack, layer_id, parent))

    async def layer_dir(self, layer_id: str) -> Path | None:
        return None  # the files are on a device: core mounts the layer to read them

    async def metadata(self, layer_id: str) -> Mapping[str, str]:
        info = self._info(layer_id)
        return {
            "DeviceId": str(info.device_id),
            "DeviceSize": str(info.size),
            "DeviceName": dm.device_name(self.devices.prefix, info.hash),
        }

    async def cleanup(self) -> None:
        if self.devices.is_ready:
            await self.devices.release_pool()
