"""The driver contract: layers, whiteouts, container rootfs, diffs, sizes, removal."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from crio.storage import ChangeKind, Store
from support.images import busybox_rootfs_tar, digest, layer_tar, put_image

BASE_FILES = {
    "etc/motd": b"base\n",
    "a/x": b"x" * 1000,
    "a/y": b"y" * 2000,
    "b/z": b"z" * 3000,
    "c": b"c\n",
}
BASE = layer_tar(BASE_FILES, dirs=["etc", "a", "b"])
CHILD_FILES = {
    "etc/motd": b"child\n",
    ".wh.c": b"",
    "a/.wh.x": b"",
    "b/.wh..wh..opq": b"",
    "b/new": b"n" * 500,
    "d/deep/file": b"d" * 700,
    "link": "->etc/motd",
}
CHILD = layer_tar(CHILD_FILES, dirs=["etc", "a", "b", "d", "d/deep"])


def _tree(root: Path) -> dict[str, bytes | str]:
    """Everything under ``root``: file contents, symlink targets ("->T"), dirs ("dir")."""
    found: dict[str, bytes | str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = "->" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                found[rel] = path.read_bytes()
            else:
                found[rel] = f"node {st.st_mode:o}"
    return found


async def _image(store: Store, layers: list[bytes], name: str = "localhost/contract:1"):
    image = await put_image(store, layers, name=name)
    return image, await store.image_layers(image.id)


def test_a_layer_and_a_child_layer(contract) -> None:
    async def go() -> None:
        store = await contract.open()
        try:
            base = await store.put_layer(BASE, diff_digest=digest(BASE))
            child = await store.put_layer(CHILD, parent=base.id, diff_digest=digest(CHILD))
            assert child.parent == base.id
            assert await store.driver.exists(base.id) and await store.driver.exists(child.id)
            assert {base.id, child.id} <= set(await store.driver.layers())
            assert [x.id for x in await store.layers()] == [base.id, child.id]
            # Each layer hands out exactly the tar it was made from.
            for layer, tar in ((base, BASE), (child, CHILD)):
                out = b"".join([chunk async for chunk in store.layer_tar(layer.id)])
                assert digest(out) == digest(tar) == layer.diff_digest
        finally:
            await store.close()

    asyncio.run(go())


def test_whiteouts_and_opaque_directories(contract) -> None:
    async def go() -> None:
        store = await contract.open()
        try:
            image, _ = await _image(store, [BASE, CHILD])
            ctr = await store.create_container(image.id, names=["wh"])
            root = await store.mount_container(ctr.id)
            try:
                tree = _tree(root)
            finally:
                await store.unmount_container(ctr.id)
            assert tree == {
                "etc": "dir",
                "etc/motd": b"child\n",
                "a": "dir",
                "a/y": b"y" * 2000,
                "b": "dir",
                "b/new": b"n" * 500,
                "d": "dir",
                "d/deep": "dir",
                "d/deep/file": b"d" * 700,
                "link": "->etc/motd",
            }
            # A third layer brings back what the second deleted.
            third = layer_tar({"c": b"again\n", "b/z": b"back"}, dirs=["b"])
            image3, _ = await _image(store, [BASE, CHILD, third], name="localhost/contract:3")
            ctr3 = await store.create_container(image3.id, names=["wh3"])
            root = await store.mount_container(ctr3.id)
            try:
                assert (root / "c").read_bytes() == b"again\n"
                assert sorted(p.name for p in (root / "b").iterdir()) == ["new", "z"]
            finally:
                await store.unmount_container(ctr3.id)
        finally:
            await store.close()

    asyncio.run(go())


def test_a_container_rootfs_is_read_written_and_unmounted(contract) -> None:
    async def go() -> None:
        store = await contract.open()
        try:
            image, _ = await _image(store, [busybox_rootfs_tar(), BASE])
            ctr = await store.create_container(image.id, names=["rw"])
            root = await store.mount_container(ctr.id)
            try:
                assert (root / "bin/busybox").stat().st_size > 0
                assert (root / "etc/motd").read_bytes() == b"base\n"
                (root / "etc/motd").write_bytes(b"written\n")
                (root / "new").write_bytes(b"fresh")
                (root / "bin/ls").unlink()
            finally:
                assert await store.unmount_container(ctr.id) == 0
            assert await store.mount_count(ctr.layer) == 0
            root = await store.mount_container(ctr.id)  # the writes outlive the mount
            try:
                assert (root / "etc/motd").read_bytes() == b"written\n"
                assert (root / "new").read_bytes() == b"fresh"
                assert not os.path.lexists(root / "bin/ls")
            finally:
                await store.unmount_container(ctr.id)
            # ... and never reach the image.
            other = await store.create_container(image.id, names=["pristine"])
            root = await store.mount_container(other.id)
            try:
                assert (root / "etc/motd").read_bytes() == b"base\n"
                assert os.path.lexists(root / "bin/ls") and not (root / "new").exists()
            finally:
                await store.unmount_container(other.id)
        finally:
            await store.close()

    asyncio.run(go())


def _expected_changes(changes, wanted: dict[str, ChangeKind], root: Path | None = None) -> None:
    """``wanted`` exactly, plus at most ancestors of changed paths reported as modified."""
    got = {c.path: c.kind for c in changes}
    for path, kind in wanted.items():
        assert got.get(path) is kind, (path, got)
    extra = {p: k for p, k in got.items() if p not in wanted}
    for path, kind in extra.items():
        assert kind is ChangeKind.MODIFY, (path, kind)
        assert any(w.startswith(path + "/") for w in wanted), (path, got)


def test_changes_and_an_exported_diff_round_trip(contract) -> None:
    async def go() -> None:
        store = await contract.open()
        try:
            image, layers = await _image(store, [busybox_rootfs_tar(), BASE])
            ctr = await store.create_container(image.id, names=["changes"])
            root = await store.mount_container(ctr.id)
            try:
                (root / "etc/motd").write_bytes(b"changed\n")
                (root / "a/x").unlink()
                (root / "srv/data").mkdir(parents=True)
                (root / "srv/data/file").write_bytes(b"f" * 4321)
                os.symlink("/srv/data/file", root / "shortcut")
            finally:
                await store.unmount_container(ctr.id)
            wanted = {
                "/etc/motd": ChangeKind.MODIFY,
                "/a/x": ChangeKind.DELETE,
                "/srv": ChangeKind.ADD,
                "/srv/data": ChangeKind.ADD,
                "/srv/data/file": ChangeKind.ADD,
                "/shortcut": ChangeKind.ADD,
            }
            _expected_changes(await store.container_changes(ctr.id), wanted)
            top = layers[-1].id
            exported = b"".join([c async for c in store.driver.diff(ctr.layer, top)])
            # The export applies as a layer of its own, which hands back the same bytes.
            layer = await store.put_layer(exported, parent=top, diff_digest=digest(exported))
            again = b"".join([c async for c in store.layer_tar(layer.id)])
            assert digest(again) == digest(exported)
            _expected_changes(await store.layer_changes(layer.id), wanted)
        finally:
            await store.close()

    asyncio.run(go())


def test_sizes_are_accounted(contract) -> None:
    async def go() -> None:
        store = await contract.open()
        try:
            image, (base, child) = await _image(store, [BASE, CHILD])
            assert base.diff_size == len(BASE) and child.diff_size == len(CHILD)
            assert await store.image_size(image.id) == len(BASE) + len(CHILD)
            contents = sum(len(v) for v in BASE_FILES.values())
            assert await store.driver.diff_size(base.id, None) == contents
            # The child adds motd, b/new and d/deep/file (whiteouts weigh nothing).
            assert await store.driver.diff_size(child.id, base.id) == 6 + 500 + 700
            ctr = await store.create_container(image.id, names=["size"])
            assert await store.driver.diff_size(ctr.layer, child.id) == 0
            root = await store.mount_container(ctr.id)
            try:
                (root / "blob").write_bytes(os.urandom(100_000))
                (root / "a/y").write_bytes(b"Y" * 10)
            finally:
                await store.unmount_container(ctr.id)
            assert await store.driver.diff_size(ctr.layer, child.id) == 100_010
        finally:
            await store.close()

    asyncio.run(go())


def test_removal_takes_nested_objects_too(contract) -> None:
    async def go() -> None:
        store = await contract.open()
        try:
            image, layers = await _image(store, [busybox_rootfs_tar(), BASE])
            ctr = await store.create_container(image.id, names=["nested"])
            root = await store.mount_container(ctr.id)
            try:
                deep = root.joinpath(*[f"d{i}" for i in range(40)])
                deep.mkdir(parents=True)
                (deep / "leaf").write_bytes(b"leaf")
                locked = root / "locked"
                (locked / "inner").mkdir(parents=True)
                (locked / "inner/file").write_bytes(b"x")
                os.chmod(locked / "inner", 0)
                os.chmod(locked, 0o500)
                if contract.env.make_nested is not None:
                    contract.env.make_nested(root / "nested")
                    (root / "nested/inside").write_bytes(b"in a nested object")
            finally:
                await store.unmount_container(ctr.id)
            await store.delete_container(ctr.id)
            assert not await store.driver.exists(ctr.layer)
            assert ctr.layer not in await store.driver.layers()
            assert not (store.containers_dir / ctr.id).exists()
            await store.delete_image(image.id)
            assert [x.id for x in await store.layers()] == []
            assert not set(await store.driver.layers()) & {x.id for x in layers}
        finally:
            await store.close()

    asyncio.run(go())
