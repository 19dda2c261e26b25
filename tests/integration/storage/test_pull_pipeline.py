"""Pulls applied while their bytes arrive, layers in parallel (overlay): what stays on disk.

The registry is :class:`~support.layout_registry.LayoutRegistry`, a test
server on 127.0.0.1 that can send a blob slowly or send other bytes than the
blob it names. Each test checks the store with ``crio check`` and, where the
store holds an image, with skopeo and podman.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio.api import api_pb2 as api
from crio.errors import NotFoundError, StorageError
from crio.image import registries
from crio.image.digest import DigestMismatchError
from crio.image.pull import ImageSettings, Puller
from crio.image.reference import Reference
from crio.plugins import Plugins
from crio.storage import Store
from support.cri import wait_until
from support.daemon import CrioProcess
from support.images import OciImage, digest, layer_tar, write_oci_layout
from support.layout_registry import LayoutRegistry, flip_byte

pytestmark = pytest.mark.skipif(
    shutil.which("skopeo") is None or shutil.which("podman") is None,
    reason="skopeo and podman are needed",
)

KPOD = str(Path(sys.executable).with_name("kpod"))


def _layer(seed: int, files: int, size: int) -> bytes:
    """A layer of ``files`` incompressible files of about ``size`` bytes each."""
    rng = random.Random(seed)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(files):
            data = rng.randbytes(rng.randint(size // 2, size))
            info = tarfile.TarInfo(f"layer{seed}/d{i % 7}/f{i}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    found = Plugins()
    found.load_entry_points()
    return found


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OciImage]:
    base = tmp_path_factory.mktemp("pipeline-images")
    shared = _layer(0, 8, 4_000)
    big = [_layer(n, 24, 40_000) for n in (1, 2, 3)]
    return {
        # gzip layers: a small base, then three of ~700 KB
        "gzip": write_oci_layout(base / "gzip", [shared, *big], ref="v1"),
        # the same as plain tars: a flipped byte inside file content keeps the tar valid
        "plain": write_oci_layout(base / "plain", [shared, *big], ref="v1", compress=False),
        # shares its base layer with the others
        "base": write_oci_layout(base / "base", [shared], ref="v1"),
    }


@pytest.fixture
def registry(images: dict[str, OciImage]) -> Iterator[LayoutRegistry]:
    served = LayoutRegistry()
    for name, image in images.items():
        served.add(f"pipeline/{name}", "v1", image)
    try:
        yield served
    finally:
        served.stop()


def _settings(registry: LayoutRegistry, tmp: Path) -> ImageSettings:
    policy = tmp / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    return ImageSettings(
        registries=registries.Registries(insecure_extra=(registry.host,)),
        signature_policy=str(policy),
    )


async def _pull(plugins: Plugins, store: Store, ref: str, settings: ImageSettings) -> str:
    storage = plugins.image_transport("containers-storage")
    assert storage is not None

    async def dest(name: Reference | None, reference: str):  # type: ignore[no-untyped-def]
        return await storage.open_destination(str(name), settings.context(store=store))

    return (await Puller().pull(plugins, ref, settings, dest, store=store)).image_id


def _crio(dirs, registry: LayoutRegistry) -> CrioProcess:  # type: ignore[no-untyped-def]
    """A crio (not started) whose store is ``dirs``' and which trusts ``registry``."""
    (dirs.base / "policy.json").write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
    return CrioProcess(
        {
            "crio": {
                "root": str(dirs.root),
                "runroot": str(dirs.runroot),
                "storage_driver": "overlay",
            },
            "crio.image": {
                "signature_policy": str(dirs.base / "policy.json"),
                "registries_conf": str(dirs.base / "registries.conf"),
                "insecure_registries": [registry.host],
            },
        }
    )


def _check(crio: CrioProcess) -> tuple[int, str]:
    result = subprocess.run(crio.command("check"), capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout


def _snapshot(dirs) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """What a failed pull must leave as it was: records, driver layers, links, markers."""
    layers = dirs.root / "overlay-layers"
    return {
        "layers.json": (layers / "layers.json").read_text(),
        "images.json": (dirs.root / "overlay-images" / "images.json").read_text(),
        "tar-split": sorted(p.name for p in layers.glob("*.tar-split.gz")),
        "driver": sorted(p.name for p in (dirs.root / "overlay").iterdir()),
        "links": sorted(p.name for p in (dirs.root / "overlay" / "l").iterdir()),
        "incomplete": sorted(
            p.name for p in (dirs.runroot / "overlay-layers" / "incomplete").glob("*")
        ),
    }


def _diff_ids_of_oci(path: Path) -> list[str]:
    """The uncompressed digests of an OCI layout's layers (skopeo gzips them)."""
    index = json.loads((path / "index.json").read_text())
    manifest = json.loads((path / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    out = []
    for layer in manifest["layers"]:
        blob = (path / "blobs/sha256" / layer["digest"][7:]).read_bytes()
        out.append(digest(gzip.decompress(blob) if "gzip" in layer["mediaType"] else blob))
    return out


def test_layers_arrive_together_and_are_recorded_parents_first(
    dirs, plugins: Plugins, registry: LayoutRegistry, images: dict[str, OciImage]
) -> None:
    image = images["gzip"]
    for blob in image.layer_digests[1:]:
        registry.pace[blob] = 0.02  # ~0.2 s each: long enough to overlap

    async def run() -> str:
        async with await Store.open(dirs.root, dirs.runroot, "overlay", plugins=plugins) as store:
            return await _pull(
                plugins, store, f"{registry.host}/pipeline/gzip:v1", _settings(registry, dirs.base)
            )

    image_id = asyncio.run(run())
    assert image_id == image.image_id
    # The three large blobs were on the wire at the same time.
    large = [kind for kind, blob in registry.log if blob in image.layer_digests[1:]]
    assert large[:3] == ["start"] * 3, registry.log
    recorded = json.loads((dirs.root / "overlay-layers" / "layers.json").read_text())
    seen: set[str] = set()
    for layer in recorded:
        assert not layer.get("parent") or layer["parent"] in seen
        seen.add(layer["id"])
    assert [x["diff-digest"] for x in recorded] == list(image.diff_ids)
    # skopeo rebuilds every layer from the files and tar-split: same digests.
    out = dirs.base / "copied"
    dirs.skopeo("copy", dirs.ref(f"{registry.host}/pipeline/gzip:v1"), f"oci:{out}:c")
    assert _diff_ids_of_oci(out) == list(image.diff_ids)


#: (image, layer index whose blob is corrupted) -- a flipped byte 60% into the blob
CORRUPTIONS = (
    ("gzip", 2),  # the gzip stream breaks while the layer is applied
    ("plain", 2),  # inside a file's bytes: the tar stays valid, only the digest tells
    ("plain", 3),  # the same for the top layer, whose parents were applied fine
)


def test_a_corrupt_blob_leaves_nothing(
    dirs, plugins: Plugins, registry: LayoutRegistry, images: dict[str, OciImage]
) -> None:
    settings = _settings(registry, dirs.base)

    async def run() -> None:
        async with await Store.open(dirs.root, dirs.runroot, "overlay", plugins=plugins) as store:
            await _pull(plugins, store, f"{registry.host}/pipeline/base:v1", settings)
            before = _snapshot(dirs)
            for kind, layer in CORRUPTIONS:
                bad = images[kind].layer_digests[layer]
                registry.tamper = {bad: flip_byte(0.6)}
                with pytest.raises(DigestMismatchError, match=bad):
                    await _pull(plugins, store, f"{registry.host}/pipeline/{kind}:v1", settings)
                assert _snapshot(dirs) == before, (kind, layer)

    asyncio.run(run())
    crio = _crio(dirs, registry)
    try:
        assert _check(crio) == (0, "crio check: 0 problem(s)\n")
    finally:
        crio.cleanup()  # its private directories (crio check made no process)


def _layers_json(root: Path) -> list[dict[str, object]]:
    path = root / "overlay-layers" / "layers.json"
    try:
        return json.loads(path.read_text() or "[]")
    except FileNotFoundError:
        return []


def test_sigkill_mid_pull_leaves_a_store_everyone_reads(
    dirs, registry: LayoutRegistry, images: dict[str, OciImage]
) -> None:
    image = images["gzip"]
    for blob in image.layer_digests[1:]:
        registry.pace[blob] = 0.1  # over a second each: killed while they are applied
    crio = _crio(dirs, registry)
    ref = f"{registry.host}/pipeline/gzip:v1"
    try:
        pull = subprocess.Popen(
            [KPOD, "--config", str(crio.config), "--config-dir", str(crio.base), "pull", "-q", ref],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        driver = dirs.root / "overlay"

        def midway() -> bool:
            """The base layer is recorded and others are being applied (or the pull ended)."""
            recorded = _layers_json(dirs.root)
            applying = len(list(driver.glob("?" * 64))) if driver.exists() else 0
            return pull.poll() is not None or (bool(recorded) and applying > len(recorded))

        wait_until(midway, timeout=120, what="a layer recorded while others are applied")
        assert pull.poll() is None, "the pull ended before it could be killed"
        os.kill(pull.pid, signal.SIGKILL)
        pull.wait()
        recorded = _layers_json(dirs.root)
        assert [x["diff-digest"] for x in recorded] == list(image.diff_ids[: len(recorded)])
        assert len(recorded) < len(image.layer_digests)
        # podman reads the store as the kill left it.
        assert dirs.podman("images", "--format", "json").returncode == 0
        code, text = _check(crio)
        problems = [line for line in text.splitlines() if line.startswith("problem: ")]
        assert code != 0 and problems
        assert all("has no record" in p or "half-written" in p for p in problems), text
        # A restarted crio cleans up what the kill left and pulls the image.
        crio.start()
        with crio.channel() as channel:
            reply = crio.image_stub(channel).PullImage(
                api.PullImageRequest(image=api.ImageSpec(image=ref)), timeout=120
            )
        assert reply.image_ref == image.image_id
        crio.stop()
        assert _check(crio) == (0, "crio check: 0 problem(s)\n")
        dirs.skopeo("copy", dirs.ref(ref), f"oci:{dirs.base / 'copied'}:c")
        assert _diff_ids_of_oci(dirs.base / "copied") == list(image.diff_ids)
    finally:
        crio.cleanup()


def test_pending_layers_commit_parents_first(dirs, plugins: Plugins) -> None:
    base_tar, top_tar = layer_tar({"a": b"1"}), layer_tar({"b": b"2"})

    async def run() -> None:
        async with await Store.open(dirs.root, dirs.runroot, "overlay", plugins=plugins) as store:
            assert store.parallel_apply
            base = await store.start_layer(diff_digest=digest(base_tar))
            top = await store.start_layer(
                parent=base.layer_id, diff_digest=digest(top_tar), parent_pending=True
            )
            await top.apply(top_tar, diff_digest=digest(top_tar))  # before its parent's
            with pytest.raises(NotFoundError, match="is not recorded"):
                await top.commit()
            assert not await store.driver.exists(top.layer_id)
            async with base:
                await base.apply(base_tar, diff_digest=digest(base_tar))
                await base.commit()
            async with await store.start_layer(
                parent=base.layer_id, diff_digest=digest(top_tar), parent_pending=True
            ) as again:
                await again.apply(top_tar, diff_digest=digest(top_tar))
                await again.commit()
            assert [x.id for x in await store.layers()] == [base.layer_id, top.layer_id]
        async with await Store.open(dirs.base / "v", dirs.base / "vr", "vfs") as vfs:
            assert not vfs.parallel_apply
            with pytest.raises(StorageError, match="parent must be complete"):
                await vfs.start_layer(parent="f" * 64, parent_pending=True)
        assert not list((dirs.runroot / "overlay-layers" / "incomplete").iterdir())

    asyncio.run(run())
