"""The aufs driver's layers without mounting: layout, whiteouts both ways, diffs, removal.

The driver is made with ``check_kernel=False`` (no kernel here has aufs); the
hook that crio uses always checks. Mounting a layer with parents is the one
path these tests cannot run; they check that it fails clearly here.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from crio.errors import ConfigError, StorageError
from crio.storage import ChangeKind, Store
from crio_plugins.storage_aufs.driver import AufsDriver, aufs_missing
from support.images import layer_tar

BASE = layer_tar(
    {"etc/motd": b"base\n", "a/x": b"x", "a/y": b"y", "b/z": b"z", "c": b"c"},
    dirs=["etc", "a", "b"],
)
CHILD = layer_tar(
    {
        "etc/motd": b"child\n",
        ".wh.c": b"",
        "a/.wh.x": b"",
        "b/.wh..wh..opq": b"",
        "b/new": b"n",
        ".wh..wh.aufs": b"",
    },
    dirs=["etc", "a", "b"],
)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _names(tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return sorted(m.name.rstrip("/") for m in archive.getmembers())


def _store(tmp_path: Path) -> Store:
    driver = AufsDriver(tmp_path / "root" / "aufs", tmp_path / "run", check_kernel=False)
    for path in (tmp_path / "root", tmp_path / "run"):
        path.mkdir(parents=True, exist_ok=True)
    return Store(tmp_path / "root", tmp_path / "run", driver)


async def _layers(store: Store):
    base = await store.put_layer(BASE, diff_digest=_digest(BASE))
    child = await store.put_layer(CHILD, parent=base.id, diff_digest=_digest(CHILD))
    return base, child


def test_layers_follow_containers_storage_layout(tmp_path: Path) -> None:
    async def go() -> None:
        store = _store(tmp_path)
        base, child = await _layers(store)
        grand = await store.put_layer(layer_tar({"g": b"g"}), parent=child.id)
        home = tmp_path / "root" / "aufs"
        assert (home / "layers" / base.id).read_text() == ""
        assert (home / "layers" / grand.id).read_text() == f"{child.id}\n{base.id}\n"
        for layer in (base, child, grand):
            assert (home / "diff" / layer.id).is_dir() and (home / "mnt" / layer.id).is_dir()
        assert sorted(await store.driver.layers()) == sorted([base.id, child.id, grand.id])

    asyncio.run(go())


def test_oci_whiteouts_are_kept_as_aufs_whiteouts_and_bookkeeping_is_dropped(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        store = _store(tmp_path)
        _, child = await _layers(store)
        branch = tmp_path / "root" / "aufs" / "diff" / child.id
        found = sorted(str(p.relative_to(branch)) for p in branch.rglob("*"))
        assert found == [".wh.c", "a", "a/.wh.x", "b", "b/.wh..wh..opq", "b/new", "etc",
                         "etc/motd"]  # fmt: skip
        assert (branch / ".wh.c").read_bytes() == b""

    asyncio.run(go())


def test_a_branch_exports_in_oci_form_and_round_trips(tmp_path: Path) -> None:
    async def go() -> None:
        store = _store(tmp_path)
        base, child = await _layers(store)
        # The original tar comes back byte for byte (tar-split over the branch) ...
        kept = b"".join([c async for c in store.layer_tar(child.id)])
        assert _digest(kept) == _digest(CHILD)
        # ... and the driver's own diff is the branch in OCI form, bookkeeping left out.
        exported = b"".join([c async for c in store.driver.diff(child.id, base.id)])
        assert _names(exported) == [".wh.c", "a", "a/.wh.x", "b", "b/.wh..wh..opq", "b/new",
                                    "etc", "etc/motd"]  # fmt: skip
        again = await store.put_layer(exported, parent=base.id)
        assert _digest(b"".join([c async for c in store.layer_tar(again.id)])) == _digest(exported)

    asyncio.run(go())


def test_bookkeeping_content_is_dropped_and_the_layer_tar_is_then_generated(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        store = _store(tmp_path)
        base, _ = await _layers(store)
        odd = layer_tar({".wh..wh.plnk/123.456": b"pseudo-link", "kept": b"k"})
        layer = await store.put_layer(odd, parent=base.id, diff_digest=_digest(odd))
        branch = tmp_path / "root" / "aufs" / "diff" / layer.id
        assert [p.name for p in branch.iterdir()] == ["kept"]
        # What was not kept cannot be read back: no tar-split, the tar is the branch's.
        assert not (store.layers_dir / f"{layer.id}.tar-split.gz").exists()
        again = b"".join([c async for c in store.layer_tar(layer.id)])
        assert _names(again) == ["kept"]

    asyncio.run(go())


def test_changes_and_sizes_read_the_branch(tmp_path: Path) -> None:
    async def go() -> None:
        store = _store(tmp_path)
        base, child = await _layers(store)
        changes = {c.path: c.kind for c in await store.layer_changes(child.id)}
        assert changes == {
            "/a": ChangeKind.MODIFY,
            "/a/x": ChangeKind.DELETE,
            "/b": ChangeKind.MODIFY,
            "/b/new": ChangeKind.ADD,
            "/c": ChangeKind.DELETE,
            "/etc": ChangeKind.MODIFY,
            "/etc/motd": ChangeKind.MODIFY,
        }
        assert await store.driver.diff_size(child.id, base.id) == len(b"child\n") + 1

    asyncio.run(go())


def test_removal_leaves_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        store = _store(tmp_path)
        base, child = await _layers(store)
        await store.delete_layer(child.id)
        home = tmp_path / "root" / "aufs"
        assert not await store.driver.exists(child.id)
        for sub in ("layers", "diff", "mnt"):
            assert [p.name for p in (home / sub).iterdir()] == [base.id]

    asyncio.run(go())


def test_a_base_layer_needs_no_mount_and_a_union_fails_clearly_without_aufs(
    tmp_path: Path,
) -> None:
    if not aufs_missing():
        pytest.skip("this kernel has aufs: the mount would work")

    async def go() -> None:
        store = _store(tmp_path)
        base, child = await _layers(store)
        assert await store.driver.get(base.id) == tmp_path / "root/aufs/diff" / base.id
        with pytest.raises(StorageError, match=f"aufs: mounting .*{child.id}"):
            await store.driver.get(child.id)

    asyncio.run(go())


def test_unknown_options_are_refused_before_the_kernel_is_asked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown aufs option 'dirs'"):
        AufsDriver(tmp_path, tmp_path, ["aufs.dirs=/x"])
