"""The vfs graph driver: each layer is a full copy of its parent plus its diff.

``home`` is ``ROOT/vfs``; layer ID lives in ``home/dir/ID`` (containers/storage's
layout). No mounts, no kernel features: it works on any file system, at the
cost of disk space and copy time. Whiteouts delete from the copy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from crio.errors import ConfigError, StorageError
from crio.storage._applier import ApplyResult, apply_tar
from crio.storage.driver import Change, WhiteoutFormat
from crio.storage.naivediff import naive_changes, naive_diff, naive_diff_size
from crio.storage.options import OPTION_KEY, driver_options
from crio.storage.tarapply import ApplyPolicy

__all__ = ["VfsDriver"]

NAME = "vfs"
_CP = shutil.which("cp") or "/bin/cp"


class VfsDriver:
    """Layers as plain directory copies (see the module docstring)."""

    name = NAME
    whiteout_format = WhiteoutFormat.NONE

    def __init__(self, home: Path, runroot: Path, options: Sequence[str] = ()) -> None:
        self.home = home
        #: ``ROOT/vfs`` of each read-only image store: where parents may live.
        self.image_homes: list[Path] = []
        for key, value in driver_options(options, (NAME,)):
            if key != "imagestore":
                raise ConfigError(
                    f"unknown vfs option {key!r} (known: vfs.imagestore)", key=OPTION_KEY
                )
            self.image_homes += [Path(p) / NAME for p in value.split(",") if p]
        (self.home / "dir").mkdir(parents=True, exist_ok=True, mode=0o700)

    def _own_dir(self, layer_id: str) -> Path:
        if len(layer_id) != 64 or not all(c in "0123456789abcdef" for c in layer_id):
            raise StorageError(f"vfs: {layer_id!r} is not a layer id")
        return self.home / "dir" / layer_id

    def _dir(self, layer_id: str) -> Path:
        """The layer's copy: this store's, else a read-only image store's."""
        path = self._own_dir(layer_id)
        if self.image_homes and not path.exists():
            for home in self.image_homes:
                if (home / "dir" / layer_id).is_dir():
                    return home / "dir" / layer_id
        return path

    async def status(self) -> Sequence[tuple[str, str]]:
        return []

    async def create(self, layer_id: str, parent: str | None, read_write: bool = False) -> None:
        path = self._own_dir(layer_id)
        if parent and not self._dir(parent).is_dir():
            raise StorageError(f"vfs: parent layer {parent} does not exist")
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            raise StorageError(f"vfs: layer {layer_id} already exists") from None
        if not parent:
            return
        proc = await asyncio.create_subprocess_exec(
            _CP, "-a", "--reflink=auto", f"{self._dir(parent)}/.", f"{path}/",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            await self.remove(layer_id)
            raise StorageError(
                f"vfs: copying layer {parent} for {layer_id}: {err.decode(errors='replace')}"
            )

    async def remove(self, layer_id: str) -> None:
        path = self._own_dir(layer_id)
        await asyncio.to_thread(shutil.rmtree, path, True)
        if path.exists():
            raise StorageError(f"vfs: could not remove layer {layer_id} ({path})")

    async def exists(self, layer_id: str) -> bool:
        return self._own_dir(layer_id).is_dir()

    async def layers(self) -> Sequence[str]:
        return [e.name for e in os.scandir(self.home / "dir") if len(e.name) == 64 and e.is_dir()]

    async def get(self, layer_id: str, mount_options: Sequence[str] = ()) -> Path:
        path = self._dir(layer_id)
        if not path.is_dir():
            raise StorageError(f"vfs: layer {layer_id} does not exist")
        return path

    async def put(self, layer_id: str) -> None:
        return None

    async def apply_diff(self, layer_id: str, parent: str | None, diff: IO[bytes]) -> ApplyResult:
        policy = ApplyPolicy(WhiteoutFormat.NONE, allow_devices=os.geteuid() == 0)
        return await asyncio.to_thread(apply_tar, self._own_dir(layer_id), diff, policy)

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
        return {"Path": str(self._dir(layer_id))}

    async def cleanup(self) -> None:
        return None
