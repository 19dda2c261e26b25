"""A thin pool and its devices, driven with ``dmsetup``, ``losetup`` and ``mkfs``.

One :class:`DeviceSet` per driver home, in containers/storage's layout::

    ROOT/devicemapper/devicemapper/data, metadata   the pool's loop files (no dm.thinpooldev)
    ROOT/devicemapper/metadata/...                  see :mod:`.metadata`
    ROOT/devicemapper/mnt/ID                        where a layer's device is mounted

The base device holds an empty filesystem (``dm.fs``, made by mkfs at the
first start); every layer is a snapshot of its parent's device (the base's
for a first layer), so a child shares its parent's blocks until it writes.
Changes to the pool go through transactions (:mod:`.metadata`), so a
process killed mid-change leaves nothing the next one does not roll back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from crio.errors import StorageError, UnsupportedError
from crio.storage._files import atomic_write
from crio_plugins.storage_devicemapper import dm
from crio_plugins.storage_devicemapper.metadata import (
    DEVICESET_FILE,
    TRANSACTION_FILE,
    DeviceInfo,
    DeviceSetInfo,
    Transaction,
    device_file_name,
    is_device_file,
)

__all__ = ["DeviceSet", "Settings", "devicemapper_missing"]

log = logging.getLogger("crio.storage.devicemapper")


@dataclass(frozen=True, slots=True)
class Settings:
    """The driver's options (``dm.*``), containers/storage's defaults."""

    base_size: int = 10 << 30
    loop_data_size: int = 100 << 30
    loop_metadata_size: int = 2 << 30
    filesystem: str = ""  # "" = xfs where mkfs.xfs and the kernel have it, else ext4
    mkfs_args: tuple[str, ...] = ()
    mount_options: tuple[str, ...] = ()
    thin_pool: str = ""
    block_sectors: int = 128  # 64 KiB
    deferred_removal: bool = True
    deferred_deletion: bool = True
    min_free_percent: int = 10


def devicemapper_missing() -> str:
    """Why this host cannot run the driver, or ""."""
    # /dev/mapper/control may exist (a static /dev) on a kernel without the driver.
    try:
        with open("/proc/misc") as handle:
            present = any(line.split()[-1:] == ["device-mapper"] for line in handle)
    except OSError:
        present = False
    if not present:
        return f"kernel {os.uname().release} has no device-mapper (not in /proc/misc)"
    for tool in ("dmsetup", "losetup", "blkid"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return ""


class DeviceSet:
    """The pool of one driver home (see the module docstring)."""

    def __init__(self, home: Path, settings: Settings) -> None:
        self.home = home
        self.settings = settings
        self.meta_dir = home / "metadata"
        self.loop_dir = home / "devicemapper"
        st = os.stat(home)
        self.prefix = dm.device_prefix(st.st_dev, st.st_ino)
        self.pool = settings.thin_pool or f"{self.prefix}-pool"
        self.info = DeviceSetInfo()
        self.lock = asyncio.Lock()
        self._ready = False
        # Without udev (a guest, a minimal host) libdevmapper makes the nodes itself.
        self._env = {**os.environ}
        if not os.path.exists("/run/udev/control"):
            self._env["DM_DISABLE_UDEV"] = "1"

    # -- commands --------------------------------------------------------------

    async def run(self, *argv: str, check: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
        )
        out, err = await proc.communicate()
        code = proc.returncode or 0
        if check and code != 0:
            text = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
            raise StorageError(f"devicemapper: {' '.join(argv[:4])}: {text}")
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    async def dmsetup(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        return await self.run("dmsetup", *args, check=check)

    async def active(self, name: str) -> bool:
        code, _, _ = await self.dmsetup("info", name, check=False)
        return code == 0

    async def open_count(self, name: str) -> int:
        code, out, _ = await self.dmsetup(
            "info", "-c", "--noheadings", "-o", "open", name, check=False
        )
        return int(out.strip() or 0) if code == 0 else 0

    async def pool_status(self) -> dm.PoolStatus:
        _, out, _ = await self.dmsetup("status", self.pool)
        try:
            return dm.parse_pool_status(out.strip())
        except ValueError as exc:
            raise StorageError(f"devicemapper: pool {self.pool}: {exc}") from None

    async def message(self, text: str) -> tuple[int, str, str]:
        return await self.dmsetup("message", self.pool, "0", text, check=False)

    # -- metadata files --------------------------------------------------------

    def device_path(self, layer_hash: str) -> Path:
        return self.meta_dir / device_file_name(layer_hash)

    def load(self, layer_hash: str) -> DeviceInfo | None:
        try:
            data = self.device_path(layer_hash).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return DeviceInfo.from_json(layer_hash, data)
        except ValueError as exc:
            raise StorageError(f"devicemapper: {self.device_path(layer_hash)}: {exc}") from None

    def save(self, info: DeviceInfo) -> None:
        atomic_write(self.device_path(info.hash), info.to_json())

    def devices(self) -> list[DeviceInfo]:
        found = []
        for entry in os.scandir(self.meta_dir):
            if entry.is_file() and is_device_file(entry.name):
                name = "" if entry.name == "base" else entry.name
                info = self.load(name)
                if info is not None:
                    found.append(info)
        return found

    def _save_set(self, **changes: object) -> None:
        fields = {
            "next_device_id": self.info.next_device_id,
            "base_uuid": self.info.base_uuid,
            "base_filesystem": self.info.base_filesystem,
            **changes,
        }
        self.info = DeviceSetInfo(**fields)  # type: ignore[arg-type]
        atomic_write(self.meta_dir / DEVICESET_FILE, self.info.to_json())

    # -- transactions ----------------------------------------------------------

    async def open_transaction(self, layer_hash: str, device_id: int) -> tuple[int, int]:
        current = (await self.pool_status()).transaction_id
        opened = Transaction(current + 1, layer_hash, device_id)
        atomic_write(self.meta_dir / TRANSACTION_FILE, opened.to_json())
        return current, current + 1

    async def close_transaction(self, ids: tuple[int, int]) -> None:
        code, _, err = await self.message(f"set_transaction_id {ids[0]} {ids[1]}")
        if code != 0:
            raise StorageError(f"devicemapper: pool {self.pool}: set_transaction_id: {err.strip()}")

    async def _roll_back(self) -> None:
        """Undo a change a dead process left between its two transaction ids."""
        try:
            pending = Transaction.from_json((self.meta_dir / TRANSACTION_FILE).read_bytes())
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise StorageError(f"devicemapper: {self.meta_dir / TRANSACTION_FILE}: {exc}") from None
        current = (await self.pool_status()).transaction_id
        if pending.open_transaction_id <= current:
            return
        log.warning(
            "devicemapper: rolling back transaction %d (device %d of %s) left by a dead process",
            pending.open_transaction_id,
            pending.device_id,
            pending.device_hash or "base",
        )
        await self.message(f"delete {pending.device_id}")  # it may never have been made
        self.device_path(pending.device_hash).unlink(missing_ok=True)
        (self.meta_dir / TRANSACTION_FILE).unlink(missing_ok=True)

    def next_device_id(self) -> int:
        used = {info.device_id for info in self.devices()}
        candidate = self.info.next_device_id
        for _ in range(dm.MAX_DEVICE_ID + 1):
            candidate = (candidate + 1) & dm.MAX_DEVICE_ID
            if candidate not in used:
                return candidate
        raise StorageError(f"devicemapper: pool {self.pool} has no free device id")

    # -- the pool --------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        """Whether this process has set the pool up (and may have to release it)."""
        return self._ready

    async def ready(self) -> None:
        """Make sure the pool, the base device and the metadata are there (once per process)."""
        if self._ready:
            return
        async with self.lock:
            if self._ready:
                return
            for path in (self.meta_dir, self.home / "mnt"):
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.info = DeviceSetInfo.from_json((self.meta_dir / DEVICESET_FILE).read_bytes())
            await self._ensure_pool()
            await self._roll_back()
            base = self.load("")
            if base is None or not base.initialized:
                await self._make_base(base)
            self._ready = True
        await self.delete_leftovers()

    async def _ensure_pool(self) -> None:
        code, targets, _ = await self.dmsetup("targets", check=False)
        if code != 0 or not any(line.split()[:1] == ["thin-pool"] for line in targets.splitlines()):
            raise UnsupportedError(
                f"storage driver devicemapper: kernel {os.uname().release} has no "
                "dm-thin-pool target"
            )
        if await self.active(self.pool):
            await self.pool_status()  # is it a thin pool at all?
            return
        if self.settings.thin_pool:
            raise StorageError(
                f"devicemapper: dm.thinpooldev {self.settings.thin_pool} does not exist"
            )
        self.loop_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = await self._loop_for("data", self.settings.loop_data_size)
        meta = await self._loop_for("metadata", self.settings.loop_metadata_size)
        sectors = (self.loop_dir / "data").stat().st_size // dm.SECTOR
        table = dm.pool_table(sectors, meta, data, self.settings.block_sectors)
        await self.dmsetup("create", self.pool, "--table", table)
        log.info("devicemapper: pool %s on loop files in %s", self.pool, self.loop_dir)

    async def _loop_for(self, name: str, size: int) -> str:
        path = self.loop_dir / name
        if not path.exists():
            with open(path, "wb") as handle:
                handle.truncate(size)
            os.chmod(path, 0o600)
        elif path.stat().st_size < size:
            os.truncate(path, size)
        _, out, _ = await self.run("losetup", "-j", str(path))
        for line in out.splitlines():  # still attached from an earlier start
            return line.split(":", 1)[0]
        _, out, _ = await self.run("losetup", "--find", "--show", str(path))
        return out.strip()

    def detach_loops(self) -> list[str]:
        return [str(self.loop_dir / name) for name in ("data", "metadata")]

    async def _make_base(self, old: DeviceInfo | None) -> None:
        if old is not None:  # a base whose mkfs never finished
            await self.delete(old, sync=True)
        elif self.settings.thin_pool:
            status = await self.pool_status()
            if status.data_used or status.transaction_id:
                raise StorageError(
                    f"devicemapper: cannot take over thin pool {self.pool}: it already holds data"
                )
        fs = self.settings.filesystem or await self._default_filesystem()
        device_id = self.next_device_id()
        ids = await self.open_transaction("", device_id)
        code, _, err = await self.message(f"create_thin {device_id}")
        if code != 0:
            raise StorageError(f"devicemapper: creating the base device: {err.strip()}")
        info = DeviceInfo("", device_id, self.settings.base_size, ids[1])
        self.save(info)
        await self.close_transaction(ids)
        self._save_set(next_device_id=device_id, base_filesystem=fs)
        name = dm.device_name(self.prefix, "")
        await self.activate(info)
        try:
            await self._mkfs(fs, f"/dev/mapper/{name}")
            _, uuid, _ = await self.run("blkid", "-s", "UUID", "-o", "value", f"/dev/mapper/{name}")
        finally:
            await self.deactivate(info, deferred=False)
        self.save(DeviceInfo("", device_id, info.size, info.transaction_id, initialized=True))
        self._save_set(base_uuid=uuid.strip())
        log.info("devicemapper: base device %s made with %s", name, fs)

    async def _default_filesystem(self) -> str:
        if shutil.which("mkfs.xfs"):
            with open("/proc/filesystems") as handle:
                if any(line.split()[-1:] == ["xfs"] for line in handle):
                    return "xfs"
        return "ext4"

    async def _mkfs(self, fs: str, device: str) -> None:
        args = list(self.settings.mkfs_args)
        if fs == "xfs":
            await self.run("mkfs.xfs", "-q", *args, device)
            return
        lazy = ["-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"]
        await self.run("mkfs.ext4", "-q", *lazy, *args, device)
        await self.run("tune2fs", "-c", "-1", "-i", "0", device)

    # -- devices ---------------------------------------------------------------

    async def add(self, layer_hash: str, parent_hash: str) -> DeviceInfo:
        """A snapshot of ``parent_hash``'s device ("" = the base) for layer ``layer_hash``."""
        await self.ready()
        async with self.lock:
            origin = self.load(parent_hash)
            if origin is None or origin.deleted:
                raise StorageError(
                    f"devicemapper: parent device {parent_hash or 'base'} does not exist"
                )
            if self.load(layer_hash) is not None:
                raise StorageError(f"devicemapper: device {layer_hash} already exists")
            await self._check_free_space()
            device_id = self.next_device_id()
            ids = await self.open_transaction(layer_hash, device_id)
            origin_name = dm.device_name(self.prefix, origin.hash)
            suspend = await self.active(origin_name)
            if suspend:  # a consistent snapshot of a device in use
                await self.dmsetup("suspend", origin_name)
            try:
                code, _, err = await self.message(f"create_snap {device_id} {origin.device_id}")
            finally:
                if suspend:
                    await self.dmsetup("resume", origin_name)
            if code != 0:
                raise StorageError(f"devicemapper: snapshot for {layer_hash}: {err.strip()}")
            info = DeviceInfo(layer_hash, device_id, origin.size, ids[1])
            self.save(info)
            await self.close_transaction(ids)
            self._save_set(next_device_id=device_id)
            return info

    async def _check_free_space(self) -> None:
        percent = self.settings.min_free_percent
        if not percent:
            return
        status = await self.pool_status()
        for what, used, total in (
            ("data", status.data_used, status.data_total),
            ("metadata", status.metadata_used, status.metadata_total),
        ):
            if total and (total - used) * 100 < total * percent:
                raise StorageError(
                    f"devicemapper: thin pool {self.pool} has less than {percent}% free {what} "
                    f"({total - used} of {total} blocks); free space or lower dm.min_free_space"
                )

    async def activate(self, info: DeviceInfo) -> str:
        name = dm.device_name(self.prefix, info.hash)
        if await self.active(name):
            # Marked for deferred removal by an earlier put: keep it.
            await self.dmsetup("message", name, "0", "@cancel_deferred_remove", check=False)
            return f"/dev/mapper/{name}"
        table = dm.thin_table(info.size // dm.SECTOR, f"/dev/mapper/{self.pool}", info.device_id)
        await self.dmsetup("create", name, "--table", table)
        return f"/dev/mapper/{name}"

    async def deactivate(self, info: DeviceInfo, deferred: bool | None = None) -> None:
        """Remove the device's mapping; with deferred removal once its last user lets go."""
        name = dm.device_name(self.prefix, info.hash)
        if not await self.active(name):
            return
        if self.settings.deferred_removal if deferred is None else deferred:
            await self.dmsetup("remove", "--deferred", name)
            return
        if await self.open_count(name):
            return  # still mounted elsewhere: its last user's put removes it
        for _ in range(50):
            code, _, err = await self.dmsetup("remove", name, check=False)
            if code == 0 or not await self.active(name):
                return
            if "busy" not in err.lower():
                raise StorageError(f"devicemapper: removing device {name}: {err.strip()}")
            await asyncio.sleep(0.1)  # a transient user (blkid, udev) lets go soon
        raise StorageError(f"devicemapper: device {name} stays busy")

    async def delete(self, info: DeviceInfo, sync: bool = False) -> None:
        """Delete a device from the pool and its metadata; with deferred deletion a device
        still in use is marked deleted and deleted when it is free."""
        name = dm.device_name(self.prefix, info.hash)
        busy = await self.open_count(name) > 0
        if busy and self.settings.deferred_deletion and not sync:
            await self.deactivate(info, deferred=True)
            self.save(DeviceInfo(info.hash, info.device_id, info.size, info.transaction_id,
                                 info.initialized, deleted=True))  # fmt: skip
            log.info("devicemapper: device %s is in use: deleted once free", name)
            return
        await self.deactivate(info, deferred=False)
        ids = await self.open_transaction(info.hash, info.device_id)
        try:
            code, _, err = await self.message(f"delete {info.device_id}")
            if code != 0 and "no such" not in err.lower() and "not found" not in err.lower():
                raise StorageError(f"devicemapper: deleting device {name}: {err.strip()}")
            self.device_path(info.hash).unlink(missing_ok=True)
        finally:
            await self.close_transaction(ids)

    async def delete_leftovers(self) -> None:
        """Delete the devices marked deleted whose users have gone."""
        async with self.lock:
            for info in [i for i in self.devices() if i.deleted]:
                if await self.open_count(dm.device_name(self.prefix, info.hash)) == 0:
                    await self.delete(info, sync=True)

    async def release_pool(self) -> None:
        """Deactivate the pool (and detach its loop files) when none of its devices is
        active: nobody uses it, and the next opener brings it back."""
        if self.settings.thin_pool or not await self.active(self.pool):
            return
        _, names, _ = await self.dmsetup("ls", check=False)
        mine = self.prefix + "-"
        ours = [line.split()[0] for line in names.splitlines() if line.startswith(mine)]
        if any(name != self.pool for name in ours):
            return
        code, _, _ = await self.dmsetup("remove", self.pool, check=False)
        if code != 0:
            return  # another process holds it
        for path in self.detach_loops():
            _, out, _ = await self.run("losetup", "-j", path, check=False)
            for line in out.splitlines():
                await self.run("losetup", "-d", line.split(":", 1)[0], check=False)
        self._ready = False
