"""The Store on the vfs driver (no root needed): layers, images, containers, repair."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zstandard

from crio.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, WrongStateError
from crio.storage import Store
from crio.storage.records import COMPRESSION_GZIP, COMPRESSION_NONE, COMPRESSION_ZSTD
from support.images import busybox_rootfs_tar, digest, gzip_bytes, layer_tar, put_image


def run(coro):
    return asyncio.run(coro)


async def _open(tmp_path: Path) -> Store:
    return await Store.open(tmp_path / "root", tmp_path / "run", "vfs")


LAYER = layer_tar({"etc/motd": b"hello\n", "bin/tool": b"#!/bin/sh\n"}, dirs=["etc", "bin"])


@pytest.mark.parametrize(
    ("encode", "compression"),
    [
        (lambda b: b, COMPRESSION_NONE),
        (gzip_bytes, COMPRESSION_GZIP),
        (lambda b: zstandard.ZstdCompressor().compress(b), COMPRESSION_ZSTD),
    ],
)
def test_put_layer_records_digests(tmp_path: Path, encode, compression: int) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        blob = encode(LAYER)
        layer = await store.put_layer(
            blob, diff_digest=digest(LAYER), compressed_digest=digest(blob)
        )
        assert layer.id == digest(LAYER).partition(":")[2]  # containers/image's id for a base layer
        assert (layer.diff_digest, layer.diff_size) == (digest(LAYER), len(LAYER))
        assert (layer.compressed_digest, layer.compressed_size) == (digest(blob), len(blob))
        assert layer.compression == compression
        assert not layer.incomplete
        assert (await store.find_layer(digest(LAYER), None)) == layer
        raw = json.loads((tmp_path / "root/vfs-layers/layers.json").read_text())
        assert raw[0]["diff-digest"] == digest(LAYER) and "flags" not in raw[0]
        assert (tmp_path / f"root/vfs-layers/{layer.id}.tar-split.gz").exists()
        tar = b"".join([c async for c in store.layer_tar(layer.id)])
        assert tar == LAYER

    run(go())


def test_existing_layer_is_returned_without_reading_the_blob(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        first = await store.put_layer(LAYER, diff_digest=digest(LAYER))

        async def never() -> AsyncIterator[bytes]:
            raise AssertionError("the blob was read")
            yield b""

        again = await store.put_layer(never(), diff_digest=digest(LAYER))
        assert again == first and len(await store.layers()) == 1

    run(go())


def test_digest_mismatch_leaves_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        with pytest.raises(InvalidRequestError, match="diff digest"):
            await store.put_layer(LAYER, diff_digest="sha256:" + "0" * 64)
        with pytest.raises(InvalidRequestError, match="blob digest"):
            await store.put_layer(gzip_bytes(LAYER), compressed_digest="sha256:" + "1" * 64)
        assert await store.layers() == []
        assert list((tmp_path / "root/vfs/dir").iterdir()) == []

    run(go())


def test_async_iterator_blob(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        blob = gzip_bytes(busybox_rootfs_tar())

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(blob), 65536):
                await asyncio.sleep(0)
                yield blob[i : i + 65536]

        layer = await store.put_layer(chunks(), diff_digest=digest(busybox_rootfs_tar()))
        assert layer.compressed_digest == digest(blob)

    run(go())


def test_images_lookup_tag_and_remove(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        image = await put_image(store, [busybox_rootfs_tar(), LAYER], name="localhost/bb:1")
        assert image.names == ("localhost/bb:1",)
        for key in (image.id, image.id[:12], "sha256:" + image.id, "localhost/bb:1", image.digest):
            assert (await store.image(key)).id == image.id
        assert (await store.image(f"localhost/bb@{image.digest}")).id == image.id
        assert json.loads(await store.image_config(image.id))["rootfs"]["diff_ids"][1] == digest(
            LAYER
        )
        assert json.loads(await store.image_manifest(image.id))["schemaVersion"] == 2
        layers = await store.image_layers(image.id)
        assert [x.diff_digest for x in layers] == [digest(busybox_rootfs_tar()), digest(LAYER)]
        assert layers[1].parent == layers[0].id
        await store.tag_image(image.id, "localhost/bb:2")
        assert (await store.image("localhost/bb:2")).names == ("localhost/bb:1", "localhost/bb:2")
        other = await put_image(store, [LAYER], name="localhost/bb:2")  # the tag moves
        assert (await store.image(image.id)).names == ("localhost/bb:1",)
        assert (await store.image("localhost/bb:2")).id == other.id
        await store.untag_image(image.id, "localhost/bb:1")
        assert (await store.image(image.id)).names == ()
        with pytest.raises(NotFoundError):
            await store.image("localhost/nothing:latest")
        deleted = await store.delete_image(image.id)
        assert deleted.layers == tuple(x.id for x in reversed(layers))
        assert [x.id for x in await store.layers()] == [(await store.image(other.id)).top_layer]
        assert not (tmp_path / "root/vfs-images" / image.id).exists()

    run(go())


def test_containers(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        image = await put_image(store, [busybox_rootfs_tar()], name="localhost/bb:1")
        ctr = await store.create_container(image.id, names=["web"], metadata='{"pod":true}')
        assert (await store.container("web")).id == ctr.id
        assert ctr.image == image.id
        layer = await store.layer(ctr.layer)
        assert layer.parent == image.top_layer and layer.names == ("web-layer",)
        with pytest.raises(AlreadyExistsError, match="web"):
            await store.create_container(image.id, names=["web"])
        root = await store.mount_container(ctr.id)
        assert (root / "bin" / "busybox").exists()
        assert await store.mount_container("web") == root
        assert await store.mount_count(ctr.layer) == 2
        (root / "created-here").write_text("x")
        changes = await store.container_changes(ctr.id)
        assert [(c.path, c.kind.value) for c in changes] == [("/created-here", "A")]
        assert await store.unmount_container(ctr.id) == 1
        assert await store.unmount_container(ctr.id) == 0
        with pytest.raises(WrongStateError, match="in use by container"):
            await store.delete_image(image.id)
        assert store.container_dir(ctr.id).is_dir()
        await store.delete_container(ctr.id)
        assert not store.container_dir(ctr.id).exists()
        with pytest.raises(NotFoundError):
            await store.layer(ctr.layer)
        await store.create_container(image.id, names=["again"])
        deleted = await store.delete_image(image.id, force=True)
        assert len(deleted.containers) == 1 and await store.containers() == []
        assert await store.layers() == []

    run(go())


def test_repair_removes_incomplete_and_orphan_layers(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        layer = await store.put_layer(LAYER)
        # A containers/storage writer that died mid-apply: flagged incomplete.
        path = tmp_path / "root/vfs-layers/layers.json"
        raw = json.loads(path.read_text())
        raw[0]["flags"] = {"incomplete": True}
        raw[0]["some-future-field"] = 7
        path.write_text(json.dumps(raw))
        # A crio writer that died before recording: only in the driver.
        orphan = "ab" * 32
        (tmp_path / "root/vfs/dir" / orphan).mkdir()
        reopened = await _open(tmp_path)
        assert await reopened.layers() == []
        assert sorted(p.name for p in (tmp_path / "root/vfs/dir").iterdir()) == []
        assert layer.id not in path.read_text()

    run(go())


def test_unknown_fields_survive_a_rewrite(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        image = await put_image(store, [LAYER], name="a:1")
        path = tmp_path / "root/vfs-images/images.json"
        raw = json.loads(path.read_text())
        raw[0]["future"] = {"x": 1}
        path.write_text(json.dumps(raw))
        await store.tag_image(image.id, "a:2")
        assert json.loads(path.read_text())[0]["future"] == {"x": 1}

    run(go())


def test_parallel_puts_of_the_same_layer(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        blob = gzip_bytes(busybox_rootfs_tar())
        results = await asyncio.gather(
            *[store.put_layer(blob, diff_digest=digest(busybox_rootfs_tar())) for _ in range(4)]
        )
        assert len({r.id for r in results}) == 1 and len(await store.layers()) == 1

    run(go())


def test_a_failing_blob_source_keeps_its_error_and_leaves_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        blob = gzip_bytes(busybox_rootfs_tar())

        async def broken() -> AsyncIterator[bytes]:
            yield blob[: len(blob) // 2]
            raise InvalidRequestError("blob sha256:abc: digest mismatch")

        with pytest.raises(InvalidRequestError, match="digest mismatch"):
            await store.put_layer(broken())
        assert await store.layers() == []
        assert list((tmp_path / "root/vfs/dir").iterdir()) == []

    run(go())


def _open_files_under(path: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(path)):
                found.append(target)
    return sorted(found)


def test_no_descriptor_outlives_a_layer_write_or_the_last_store(tmp_path: Path) -> None:
    """A daemon writes layers for ever: each one's lock file used to stay open (deleted)."""

    async def go() -> None:
        store = await _open(tmp_path)
        other = await _open(tmp_path)  # a second store on the same root in this process
        for n in range(5):
            await put_image(store, [layer_tar({f"f{n}": b"x" * n})], name=f"localhost/t{n}:1")
        blob = gzip_bytes(busybox_rootfs_tar())
        await asyncio.gather(
            *[store.put_layer(blob, diff_digest=digest(busybox_rootfs_tar())) for _ in range(3)]
        )
        names = ["containers.lock", "images.lock", "layers.lock", "mountpoints.lock"]
        assert sorted(Path(p).name for p in _open_files_under(tmp_path)) == names
        await store.close()
        assert sorted(Path(p).name for p in _open_files_under(tmp_path)) == names  # other's
        assert len(await other.images()) == 5  # its locks still work
        await other.close()
        assert _open_files_under(tmp_path) == []
        reopened = await _open(tmp_path)
        await put_image(reopened, [layer_tar({"again": b"y"})], name="localhost/again:1")
        await reopened.close()
        assert _open_files_under(tmp_path) == []

    run(go())
