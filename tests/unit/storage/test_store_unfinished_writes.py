"""A record file's temporary copy left by a killed writer: reported by crio check, removed
on open."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crio.check import store_problems
from crio.storage import Store


def test_left_temporary_files_are_reported_then_removed(tmp_path: Path) -> None:
    async def go() -> None:
        store = await Store.open(tmp_path / "root", tmp_path / "run", "vfs")
        await store.close()
        left = [
            store.layers_dir / ".layers.json.k3j4h5",
            store.containers_dir / ".containers.json.x9y8z7",
            store.run_layers_dir / ".mountpoints.json.abcdef",
        ]
        for path in left:
            path.write_bytes(b'[{"id": "half')
        readonly = await Store.open(tmp_path / "root", tmp_path / "run", "vfs", repair=False)
        assert readonly.unfinished_writes() == sorted(left)
        problems = await store_problems(readonly)
        assert [p for p in problems if "half-written" in p] == [
            f"store file {path} was left half-written by a crashed writer" for path in sorted(left)
        ]
        assert all(path.exists() for path in left)  # read-only: nothing changed
        repaired = await Store.open(tmp_path / "root", tmp_path / "run", "vfs")
        assert repaired.unfinished_writes() == []
        assert await store_problems(repaired) == []

    asyncio.run(go())
