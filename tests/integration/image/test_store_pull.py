"""Pulling from a real registry into crio's store: records, reuse, failure cleanup, sharing."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crio.image import manifest as mf
from crio.image.copy import Progress
from crio.image.digest import DigestMismatchError
from crio.image.pull import ImageSettings, Puller, PullResult
from crio.image.reference import Reference
from crio.plugins import Plugins
from crio.storage import Store
from support.image_pull import Pushed, host_instance, settings_for
from support.image_shapes import build_layout
from support.registry import Registry, skopeo_push


async def _open(tmp: Path, plugins: Plugins) -> Store:
    return await Store.open(tmp / "root", tmp / "runroot", "vfs", plugins=plugins)


def store_destination(plugins: Plugins, store: Store):
    storage = plugins.image_transport("containers-storage")
    assert storage is not None

    async def open_dest(ref: Reference | None, reference: str):
        return await storage.open_destination(str(ref) if ref else "", settings_ctx(store))

    return open_dest


_SETTINGS: dict[int, ImageSettings] = {}


def settings_ctx(store: Store):
    return _SETTINGS[id(store)].context(store=store)


async def pull(
    plugins: Plugins, store: Store, image: str, settings: ImageSettings, **kwargs: object
) -> PullResult:
    _SETTINGS[id(store)] = settings
    puller = kwargs.pop("puller", None) or Puller()
    return await puller.pull(  # type: ignore[union-attr]
        plugins, image, settings, store_destination(plugins, store), store=store, **kwargs
    )


def snapshot(root: Path) -> tuple[str, str, list[str]]:
    layers = (
        (root / "vfs-layers" / "layers.json").read_text()
        if (root / "vfs-layers" / "layers.json").exists()
        else ""
    )
    images = (
        (root / "vfs-images" / "images.json").read_text()
        if (root / "vfs-images" / "images.json").exists()
        else ""
    )
    dirs = (
        sorted(p.name for p in (root / "vfs" / "dir").iterdir())
        if (root / "vfs" / "dir").exists()
        else []
    )
    return layers, images, dirs


@pytest.mark.parametrize("shape", ["oci", "v2s2", "v2s1", "zstd", "index"])
def test_pull_into_store(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path, shape: str
) -> None:
    pushed = shapes[shape]
    settings = settings_for(tmp_path, open_registry.host)

    async def run() -> None:
        store = await _open(tmp_path, plugins)
        try:
            result = await pull(plugins, store, f"{pushed.repository}:v1", settings)
            image = await store.image(result.image_id)
            assert image.names == (f"{pushed.repository}:v1",)
            layers = await store.image_layers(image.id)
            assert [x.diff_digest for x in layers] == pushed.image.diff_ids
            assert pushed.digest in image.digests  # the registry's digest (the index's, too)
            if shape == "index":
                assert host_instance(pushed) in image.digests
            if shape != "v2s1":
                assert image.id == pushed.image.config_digest[7:]
                assert [x.compressed_digest for x in layers] == pushed.image.layer_digests
            config = json.loads(await store.image_config(image.id))
            assert config["rootfs"]["diff_ids"] == pushed.image.diff_ids
            mounted = await store.mount_image(image.id)
            try:
                assert (mounted / "etc" / "hello").read_bytes().startswith(b"hello from crio tests")
                assert (mounted / "bin" / "sh").is_symlink()
            finally:
                await store.unmount_image(image.id)
        finally:
            await store.close()

    asyncio.run(run())
    # skopeo reads what crio stored.
    out = subprocess.run(
        [
            "skopeo",
            "inspect",
            f"containers-storage:[vfs@{tmp_path}/root+{tmp_path}/runroot]{pushed.repository}:v1",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Layers"]


def test_second_pull_reuses_layers(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    pushed = shapes["oci"]
    settings = settings_for(tmp_path, open_registry.host)

    async def run() -> list[Progress]:
        store = await _open(tmp_path, plugins)
        events: list[Progress] = []
        try:
            await pull(plugins, store, f"{pushed.repository}:v1", settings)
            await pull(
                plugins,
                store,
                f"{pushed.repository}@{pushed.digest}",
                settings,
                progress=events.append,
            )
            image = await store.image(f"{pushed.repository}@{pushed.digest}")
            assert f"{pushed.repository}@{pushed.digest}" in image.names
        finally:
            await store.close()
        return events

    events = asyncio.run(run())
    assert [e.kind for e in events if e.index >= 0] == ["skip", "skip"]


def test_corrupt_blob_leaves_the_store_as_it_was(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    image = build_layout(tmp_path / "src", "oci", extra=b"corrupt-store")
    skopeo_push(image.source, open_registry, "corrupt/store:v1")
    bad = image.layer_digests[1]
    blob = open_registry.blob_file(bad)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    settings = settings_for(tmp_path, open_registry.host)

    async def run() -> None:
        store = await _open(tmp_path, plugins)
        try:
            await pull(plugins, store, f"{shapes['oci'].repository}:v1", settings)
            before = snapshot(tmp_path / "root")
            with pytest.raises(DigestMismatchError, match=bad):
                await pull(plugins, store, f"{open_registry.host}/corrupt/store:v1", settings)
            assert snapshot(tmp_path / "root") == before
        finally:
            await store.close()

    asyncio.run(run())


def test_concurrent_pulls_share_one_download(
    plugins: Plugins, open_registry: Registry, tmp_path: Path
) -> None:
    image = build_layout(tmp_path / "src", "oci", extra=b"shared")
    skopeo_push(image.source, open_registry, "shared/app:v1")
    settings = settings_for(tmp_path, open_registry.host)
    started: list[Progress] = []

    async def run() -> list[PullResult]:
        store = await _open(tmp_path, plugins)
        puller = Puller()
        try:
            return list(
                await asyncio.gather(
                    *(
                        pull(
                            plugins,
                            store,
                            f"{open_registry.host}/shared/app:v1",
                            settings,
                            puller=puller,
                            share_key="store",
                            progress=lambda e: started.append(e) if e.kind == "start" else None,
                        )
                        for _ in range(4)
                    )
                )
            )
        finally:
            await store.close()

    results = asyncio.run(run())
    assert len({r.image_id for r in results}) == 1
    assert sorted(e.index for e in started if e.index >= 0) == [0, 1]  # each layer fetched once


def test_rejected_image_is_not_stored(
    plugins: Plugins, shapes: dict[str, Pushed], open_registry: Registry, tmp_path: Path
) -> None:
    from crio.image.policy import PolicyRejectedError
    from support.image_pull import write_policy

    reject = write_policy(tmp_path / "reject.json", '{"default": [{"type": "reject"}]}')
    settings = settings_for(tmp_path, open_registry.host, signature_policy=reject)

    async def run() -> None:
        store = await _open(tmp_path, plugins)
        try:
            with pytest.raises(PolicyRejectedError, match="reject"):
                await pull(plugins, store, f"{shapes['oci'].repository}:v1", settings)
            assert await store.images() == [] and await store.layers() == []
        finally:
            await store.close()

    asyncio.run(run())


async def _unused() -> AsyncIterator[bytes]:  # keeps mypy quiet about the import
    yield b""


__all__ = ["mf"]


def _lie_about_diff_id(root: Path) -> None:
    """Rewrite the layout so the config names a wrong diff_id for layer 2."""
    import hashlib

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs/sha256" / digest).write_bytes(data)
        return "sha256:" + digest

    index = json.loads((root / "index.json").read_text())
    manifest = json.loads(
        (root / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes()
    )
    config = json.loads((root / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes())
    config["rootfs"]["diff_ids"][1] = "sha256:" + "5" * 64
    raw = json.dumps(config).encode()
    manifest["config"].update(digest=put(raw), size=len(raw))
    mraw = json.dumps(manifest).encode()
    index["manifests"][0].update(digest=put(mraw), size=len(mraw))
    (root / "index.json").write_text(json.dumps(index))


def test_wrong_diff_id_fails_in_the_store_and_leaves_nothing(
    plugins: Plugins, open_registry: Registry, tmp_path: Path
) -> None:
    image = build_layout(tmp_path / "src", "oci", extra=b"lying config")
    _lie_about_diff_id(tmp_path / "src")
    skopeo_push(image.source, open_registry, "lying/app:v1")
    settings = settings_for(tmp_path, open_registry.host)

    async def run() -> None:
        store = await _open(tmp_path, plugins)
        try:
            with pytest.raises(DigestMismatchError, match=f"layer blob {image.layer_digests[1]}"):
                await pull(plugins, store, f"{open_registry.host}/lying/app:v1", settings)
            assert await store.images() == [] and await store.layers() == []
        finally:
            await store.close()

    asyncio.run(run())
    assert snapshot(tmp_path / "root")[2] == []
