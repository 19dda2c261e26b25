"""The aufs graph driver, in containers/storage's on-disk layout.

``home`` is ``ROOT/aufs``::

    layers/ID   the layer's parents, nearest first, one id per line
    diff/ID     the layer's own files: its aufs branch (whiteouts as ``.wh.`` files)
    mnt/ID      where the union of the layer and its parents is mounted

A base layer is presented as its branch; a layer with parents is mounted
as an aufs union (see :mod:`crio_plugins.storage_aufs.branches` for the
options). The mount path has not run on a real aufs kernel: Debian's kernels
stopped shipping aufs, and no kernel here has it. On a kernel without aufs
the driver is refused at start with one line naming the kernel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from crio.errors import ConfigError, StorageError, UnsupportedError
from crio.storage import mount as m
from crio.storage._applier import ApplyResult, apply_tar
from crio.storage.driver import Change, WhiteoutFormat
from crio.storage.mount import BTRFS_MAGIC, fs_magic
from crio.storage.options import OPTION_KEY, driver_options
from crio.storage.tarapply import ApplyPolicy
from crio.storage.tarwrite import tar_entries
from crio_plugins.storage_aufs.branches import (
    WHITEOUT_PREFIX,
    branch_changes,
    branch_entries,
    mount_data,
)

__all__ = ["AufsDriver", "aufs_missing"]

log = logging.getLogger("crio.storage.aufs")

NAME = "aufs"
BASE_MODE = 0o555
MS_REMOUNT = 32
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_REFUSED_BACKING = {0x61756673: "aufs", BTRFS_MAGIC: "btrfs", 0xF15F: "ecryptfs"}


def aufs_missing() -> str:
    """Why this kernel cannot run the driver (one line, naming the kernel), or ""."""
    try:
        with open("/proc/filesystems") as handle:
            if any(line.split()[-1:] == ["aufs"] for line in handle):
                return ""
    except OSError as exc:
        return f"cannot read /proc/filesystems: {exc.strerror}"
    return (
        f"kernel {os.uname().release} has no aufs (not in /proc/filesystems); "
        'use storage_driver = "overlay"'
    )


class AufsDriver:
    """Layers as aufs branches (see the module docstring)."""

    name = NAME
    whiteout_format = WhiteoutFormat.AUFS

    def __init__(
        self, home: Path, runroot: Path, options: Sequence[str] = (), *, check_kernel: bool = True
    ) -> None:
        """:param check_kernel: False only for tests of the parts that do not mount."""
        self.home = home
        self.mount_options: list[str] = []
        for key, value in driver_options(options, (NAME,)):
            if key == "imagestore":
                raise ConfigError(
                    "additionalimagestores: the aufs driver does not use read-only image "
                    "stores; use overlay or vfs",
                    key=OPTION_KEY,
                )
            if key != "mountopt":
                raise ConfigError(
                    f"unknown aufs option {key!r} (known: aufs.mountopt)", key=OPTION_KEY
                )
            self.mount_options = [o for o in value.split(",") if o]
        if check_kernel:
            missing = aufs_missing()
            if missing:
                raise UnsupportedError(f"storage driver aufs: {missing}")
        for sub in ("layers", "diff", "mnt"):
            (home / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        backing = _REFUSED_BACKING.get(fs_magic(home))
        if backing:
            raise UnsupportedError(f"storage driver aufs cannot keep layers on {backing} ({home})")
        # Without auplink, pseudo-links could not be flushed before unmounting.
        self.auplink = shutil.which("auplink")
        for sub in ("diff", "mnt"):
            for stale in (home / sub).glob("*-removing"):
                shutil.rmtree(stale, ignore_errors=True)

    # -- paths -----------------------------------------------------------

    def _check(self, layer_id: str) -> str:
        if len(layer_id) != 64 or not all(c in "0123456789abcdef" for c in layer_id):
            raise StorageError(f"aufs: {layer_id!r} is not a layer id")
        return layer_id

    def _diff(self, layer_id: str) -> Path:
        return self.home / "diff" / self._check(layer_id)

    def _mnt(self, layer_id: str) -> Path:
        return self.home / "mnt" / self._check(layer_id)

    def _parents(self, layer_id: str) -> list[str]:
        try:
            text = (self.home / "layers" / self._check(layer_id)).read_text()
        except FileNotFoundError:
            return []
        return [line.strip() for line in text.splitlines() if line.strip()]

    # -- GraphDriver -----------------------------------------------------

    async def status(self) -> Sequence[tuple[str, str]]:
        count = len(await self.layers())
        return [
            ("Root Dir", str(self.home)),
            ("Dirs", str(count)),
            ("Pseudo-links", "flushed by auplink" if self.auplink else "off (no auplink)"),
        ]

    async def create(self, layer_id: str, parent: str | None, read_write: bool = False) -> None:
        await asyncio.to_thread(self._create, layer_id, parent)

    def _create(self, layer_id: str, parent: str | None) -> None:
        record = self.home / "layers" / self._check(layer_id)
        if record.exists():
            raise StorageError(f"aufs: layer {layer_id} already exists")
        chain: list[str] = []
        mode, owner = BASE_MODE, (os.geteuid(), os.getegid())
        if parent:
            if not (self.home / "layers" / self._check(parent)).exists():
                raise StorageError(f"aufs: parent layer {parent} does not exist")
            chain = [parent, *self._parents(parent)]
            st = os.stat(self._diff(parent))
            mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
        try:
            for path in (self._diff(layer_id), self._mnt(layer_id)):
                path.mkdir(mode=mode)
                os.chmod(path, mode)
                if owner != (os.geteuid(), os.getegid()):
                    os.chown(path, *owner)
            record.write_text("".join(f"{x}\n" for x in chain))
        except BaseException:
            self._remove(layer_id)
            raise

    async def remove(self, layer_id: str) -> None:
        await asyncio.to_thread(self._remove, layer_id)

    def _remove(self, layer_id: str) -> None:
        mnt = self._mnt(layer_id)
        if m.is_mountpoint(mnt):
            self._unmount(mnt)
        (self.home / "layers" / layer_id).unlink(missing_ok=True)
        for path in (self._diff(layer_id), mnt):
            # Out of the way first, so no one finds a half-removed layer.
            doomed = path.with_name(path.name + "-removing")
            try:
                os.rename(path, doomed)
            except FileNotFoundError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            if doomed.exists():
                raise StorageError(f"aufs: could not remove layer {layer_id} ({doomed})")

    async def exists(self, layer_id: str) -> bool:
        return os.path.lexists(self.home / "layers" / self._check(layer_id))

    async def layers(self) -> Sequence[str]:
        def scan() -> list[str]:
            return [
                e.name
                for e in os.scandir(self.home / "diff")
                if len(e.name) == 64 and e.is_dir(follow_symlinks=False)
            ]

        return await asyncio.to_thread(scan)

    async def get(self, layer_id: str, mount_options: Sequence[str] = ()) -> Path:
        if not await self.exists(layer_id):
            raise StorageError(f"aufs: layer {layer_id} does not exist")
        parents = self._parents(layer_id)
        if not parents:
            return self._diff(layer_id)  # a base layer needs no union
        target = self._mnt(layer_id)
        if await asyncio.to_thread(m.is_mountpoint, target):
            return target
        flags, extra = m.split_options([*self.mount_options, *mount_options])
        data = mount_data(
            str(self._diff(layer_id)),
            [str(self._diff(p)) for p in parents],
            plink=self.auplink is not None,
            options=[o for o in extra.split(",") if o],
            page_size=PAGE_SIZE,
        )
        await asyncio.to_thread(self._mount, target, flags, data)
        return target

    def _mount(self, target: Path, flags: int, data: list[str]) -> None:
        try:
            m.mount("none", target, "aufs", flags, data[0])
            for more in data[1:]:
                m.mount("none", target, "aufs", flags | MS_REMOUNT, more)
        except OSError as exc:
            m.unmount(target)
            raise StorageError(f"aufs: mounting {target}: {exc}") from exc

    async def put(self, layer_id: str) -> None:
        target = self._mnt(layer_id)
        if await asyncio.to_thread(m.is_mountpoint, target):
            await asyncio.to_thread(self._unmount, target)

    def _unmount(self, target: Path) -> None:
        if self.auplink:
            done = subprocess.run(
                [self.auplink, str(target), "flush"], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                log.warning("aufs: auplink %s flush failed: %s", target, done.stderr.strip())
        m.unmount(target, 0)

    async def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> ApplyResult:
        policy = ApplyPolicy(WhiteoutFormat.AUFS, allow_devices=os.geteuid() == 0)
        return await asyncio.to_thread(apply_tar, self._diff(layer_id), diff, policy)

    async def diff(self, layer_id: str, parent: str | None) -> AsyncIterator[bytes]:
        branch = self._diff(layer_id)
        chunks = tar_entries(branch, branch_entries(branch))
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                return
            yield chunk

    async def changes(self, layer_id: str, parent: str | None) -> Sequence[Change]:
        lowers = [self._diff(p) for p in self._parents(layer_id)]
        return await asyncio.to_thread(branch_changes, self._diff(layer_id), lowers)

    async def diff_size(self, layer_id: str, parent: str | None) -> int:
        def total() -> int:
            size = 0
            for entry in branch_entries(self._diff(layer_id)):
                full = self._diff(layer_id) / entry.path
                if full.name.startswith(WHITEOUT_PREFIX) or full.is_symlink():
                    continue
                if full.is_file():
                    size += full.stat().st_size
            return size

        return await asyncio.to_thread(total)

    async def layer_dir(self, layer_id: str) -> Path | None:
        return self._diff(layer_id)

    async def metadata(self, layer_id: str) -> Mapping[str, str]:
        return {
            "Branch": str(self._diff(layer_id)),
            "Parents": ",".join(self._parents(layer_id)),
            "MountPoint": str(self._mnt(layer_id)),
        }

    async def cleanup(self) -> None:
        return None  # mounts counted by core stay for the processes using them
