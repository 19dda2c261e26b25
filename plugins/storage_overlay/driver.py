"""The overlay graph driver, in containers/storage's on-disk layout.

``home`` is ``ROOT/overlay``. Each layer is ``home/ID/`` with:

* ``diff/``  the layer's own files (overlay whiteouts inside);
* ``link``   a 26-character name; ``home/l/NAME`` is a symlink to ``../ID/diff``;
* ``lower``  the lower layers, uppermost first, as ``l/NAME:l/NAME...``
  (absent for a base layer, which has an ``empty/`` directory instead);
* ``work/``, ``merged/``  overlayfs' work directory and the mount point.

The short links keep the mount data small: each lower costs ``len(home)+30``
bytes. When the data would not fit in one page (a deep image under a long
root), the mount is done by ``mount(8)`` running in ``home`` with relative
paths (29 bytes per lower), as containers/storage does.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from crio.errors import ConfigError, StorageError, UnsupportedError
from crio.storage import mount as m
from crio.storage.driver import Change, WhiteoutFormat

if TYPE_CHECKING:
    from crio.storage._applier import ApplyResult

__all__ = ["OverlayDriver", "overlay_supported"]

log = logging.getLogger("crio.storage.overlay")

NAME = "overlay"
LINK_DIR = "l"
ID_LENGTH = 26
MAX_DEPTH = 500
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_MOUNT = shutil.which("mount") or "/bin/mount"


def overlay_supported() -> tuple[bool, str]:
    """Whether this kernel has overlayfs; the reason when not."""
    try:
        with open("/proc/filesystems") as handle:
            if any(line.split()[-1:] == ["overlay"] for line in handle):
                return True, ""
    except OSError as exc:
        return False, f"cannot read /proc/filesystems: {exc}"
    return False, "the kernel has no overlay file system (is the module loaded?)"


def _backing_fs(path: Path) -> str:
    best, fstype = "", "unknown"
    try:
        with open("/proc/self/mounts") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = str(path).startswith(point.rstrip("/") + "/") or str(path) == point
                if inside and len(point) >= len(best):
                    best, fstype = point, fields[2]
    except OSError:
        pass
    return fstype


def _new_link() -> str:
    return base64.b32encode(secrets.token_bytes(20)).decode()[:ID_LENGTH]


class OverlayDriver:
    """Layers as overlayfs lower/upper directories (see the module docstring)."""

    name = NAME
    whiteout_format = WhiteoutFormat.OVERLAY
    #: create() reads only the parent's ``link`` and ``lower``; a diff goes to ``ID/diff``.
    parallel_apply = True

    def __init__(self, home: Path, runroot: Path, options: Sequence[str] = ()) -> None:
        self.home = home
        self.runhome = runroot / NAME
        self.mount_options: list[str] = []
        #: ``ROOT/overlay`` of each read-only image store: where parents may live.
        self.image_homes: list[Path] = []
        for option in options:
            key, _, value = option.partition("=")
            key = key.strip().lower()
            if "." in key:
                driver, _, key = key.partition(".")
                if driver != NAME:
                    continue  # another driver's option
            if key == "mountopt":
                self.mount_options = [o for o in value.split(",") if o]
            elif key == "imagestore":
                self.image_homes += [Path(p) / NAME for p in value.split(",") if p]
            elif key in ("skip_mount_home", "override_kernel_check"):
                continue
            else:
                raise ConfigError(
                    f"unknown overlay option {option!r} (known: overlay.mountopt, "
                    "overlay.imagestore)",
                    key="crio.storage_option",
                )
        supported, why = overlay_supported()
        if not supported:
            raise UnsupportedError(f"storage driver overlay: {why}")
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.backing_fs = _backing_fs(self.home.resolve())
        if self.backing_fs in ("overlay", "aufs", "ecryptfs"):
            raise UnsupportedError(
                f"storage driver overlay cannot keep layers on {self.backing_fs} ({self.home})"
            )
        (self.home / LINK_DIR).mkdir(exist_ok=True, mode=0o755)
        flag = self.home / ".has-mount-program"
        if not flag.exists():
            flag.write_text("false")
        self.runhome.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- paths -----------------------------------------------------------

    def _own_dir(self, layer_id: str) -> Path:
        if len(layer_id) != 64 or not all(c in "0123456789abcdef" for c in layer_id):
            raise StorageError(f"overlay: {layer_id!r} is not a layer id")
        return self.home / layer_id

    def _dir(self, layer_id: str) -> Path:
        """The layer's directory: this store's, else a read-only image store's."""
        path = self._own_dir(layer_id)
        if self.image_homes and not path.exists():
            for home in self.image_homes:
                if (home / layer_id).is_dir():
                    return home / layer_id
        return path

    def _resolve(self, lower: str) -> Path:
        """A ``lower`` entry (``l/NAME``) as a path: the short link lives in the
        store that holds the layer."""
        own = self.home / lower
        if self.image_homes and not os.path.lexists(own):
            for home in self.image_homes:
                if os.path.lexists(home / lower):
                    return home / lower
        return own

    def _lowers(self, layer_id: str) -> list[str]:
        try:
            text = (self._dir(layer_id) / "lower").read_text()
        except FileNotFoundError:
            return []
        return [part for part in text.strip().split(":") if part]

    # -- GraphDriver -----------------------------------------------------

    async def status(self) -> Sequence[tuple[str, str]]:
        return [
            ("Backing Filesystem", self.backing_fs),
            ("Supports d_type", "true"),
            ("Native Overlay Diff", "true"),
            ("Using metacopy", "false"),
        ]

    async def create(self, layer_id: str, parent: str | None, read_write: bool = False) -> None:
        await asyncio.to_thread(self._create, layer_id, parent)

    def _create(self, layer_id: str, parent: str | None) -> None:
        path = self._own_dir(layer_id)
        lower = ""
        if parent:
            parent_dir = self._dir(parent)
            try:
                parent_link = (parent_dir / "link").read_text().strip()
            except FileNotFoundError:
                raise StorageError(f"overlay: parent layer {parent} does not exist") from None
            lowers = [f"{LINK_DIR}/{parent_link}", *self._lowers(parent)]
            if len(lowers) > MAX_DEPTH:
                raise StorageError(f"overlay: layer {layer_id} would have more than 500 lowers")
            lower = ":".join(lowers)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            raise StorageError(f"overlay: layer {layer_id} already exists") from None
        try:
            (path / "diff").mkdir(mode=0o755)
            link = _new_link()
            os.symlink(f"../{layer_id}/diff", self.home / LINK_DIR / link)
            (path / "link").write_text(link)
            if lower:
                (path / "lower").write_text(lower)
            else:
                (path / "empty").mkdir(mode=0o700)
            (path / "work").mkdir(mode=0o700)
            (path / "merged").mkdir(mode=0o700)
        except BaseException:
            self._remove(layer_id)
            raise

    async def remove(self, layer_id: str) -> None:
        await asyncio.to_thread(self._remove, layer_id)

    def _remove(self, layer_id: str) -> None:
        path = self._own_dir(layer_id)
        m.unmount(path / "merged")
        try:
            link = (path / "link").read_text().strip()
            if link and "/" not in link:
                (self.home / LINK_DIR / link).unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            raise StorageError(f"overlay: could not remove layer {layer_id} ({path})")

    async def exists(self, layer_id: str) -> bool:
        return self._own_dir(layer_id).is_dir()

    async def layers(self) -> Sequence[str]:
        def scan() -> list[str]:
            return [
                e.name
                for e in os.scandir(self.home)
                if len(e.name) == 64 and e.is_dir() and all(c in "0123456789abcdef" for c in e.name)
            ]

        return await asyncio.to_thread(scan)

    async def get(self, layer_id: str, mount_options: Sequence[str] = ()) -> Path:
        path = self._own_dir(layer_id)  # a read-only store's layer is never mounted here
        merged = path / "merged"
        if await asyncio.to_thread(m.is_mountpoint, merged):
            return merged
        options = [*self.mount_options, *mount_options]
        read_only = "ro" in options
        lowers = self._lowers(layer_id)
        if not path.is_dir():
            raise StorageError(f"overlay: layer {layer_id} does not exist")
        merged.mkdir(mode=0o700, exist_ok=True)
        absolute = [str(self._resolve(lower)) for lower in lowers] or [str(path / "empty")]
        flags, data = m.split_options(
            [_layer_options(absolute, path, read_only), *[o for o in options if o != "ro"]]
        )
        if read_only:
            flags |= 1
        if len(data) < PAGE_SIZE - 1:
            await asyncio.to_thread(m.mount, "overlay", merged, "overlay", flags, data)
            return merged
        if any(not os.path.lexists(self.home / lower) for lower in lowers):
            raise StorageError(
                f"overlay: layer {layer_id} has too many lowers from read-only image stores "
                "to mount in one page"
            )
        relative = lowers or [f"{layer_id}/empty"]
        short = [_layer_options(relative, Path(layer_id), read_only), *options]
        if len(",".join(short)) >= PAGE_SIZE - 1:
            raise StorageError(f"overlay: layer {layer_id} has too many lowers to mount")
        proc = await asyncio.create_subprocess_exec(
            _MOUNT, "-t", "overlay", "-o", ",".join(short), "overlay", f"{layer_id}/merged",
            cwd=self.home,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise StorageError(
                f"overlay: mounting layer {layer_id}: {err.decode(errors='replace').strip()}"
            )
        return merged

    async def put(self, layer_id: str) -> None:
        merged = self._own_dir(layer_id) / "merged"
        await asyncio.to_thread(m.unmount, merged)

    async def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> ApplyResult:
        # The tar code loads with the first layer applied, not when the store opens.
        from crio.storage._applier import apply_tar
        from crio.storage.tarapply import ApplyPolicy

        policy = ApplyPolicy(WhiteoutFormat.OVERLAY, allow_devices=os.geteuid() == 0)
        return await asyncio.to_thread(apply_tar, self._own_dir(layer_id) / "diff", diff, policy)

    async def diff(self, layer_id: str, parent: str | None) -> AsyncIterator[bytes]:
        from crio.storage.tarwrite import overlay_entries, tar_entries

        upper = self._dir(layer_id) / "diff"
        chunks = tar_entries(upper, overlay_entries(upper))
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                return
            yield chunk

    def _lower_paths(self, layer_id: str) -> list[Path]:
        return [self._resolve(lower).resolve() for lower in self._lowers(layer_id)]

    async def changes(self, layer_id: str, parent: str | None) -> Sequence[Change]:
        from crio.storage.tarwrite import overlay_changes

        upper = self._dir(layer_id) / "diff"
        return await asyncio.to_thread(overlay_changes, upper, self._lower_paths(layer_id))

    async def diff_size(self, layer_id: str, parent: str | None) -> int:
        upper = self._dir(layer_id) / "diff"
        return await asyncio.to_thread(_content_size, upper)

    async def layer_dir(self, layer_id: str) -> Path | None:
        return self._dir(layer_id) / "diff"

    async def metadata(self, layer_id: str) -> Mapping[str, str]:
        path = self._dir(layer_id)
        return {
            "LowerDir": ":".join(str(p) for p in self._lower_paths(layer_id)),
            "UpperDir": str(path / "diff"),
            "WorkDir": str(path / "work"),
            "MergedDir": str(path / "merged"),
        }

    async def cleanup(self) -> None:
        return None


def _layer_options(lowers: list[str], path: Path, read_only: bool) -> str:
    if read_only:
        return f"lowerdir={path / 'diff'}:{':'.join(lowers)}"
    return f"lowerdir={':'.join(lowers)},upperdir={path / 'diff'},workdir={path / 'work'}"


def _content_size(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            if not os.path.islink(os.path.join(folder, name)):
                total += st.st_size
    return total
