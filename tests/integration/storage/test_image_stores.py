"""Read-only image stores (additionalimagestores) through a read-only bind mount.

A "writer" store is filled once and bind-mounted read-only, as nodes mount a
shared store over NFS (tests/integration/storage/test_guest_drivers.py does
that with a real NFS export in a qemu guest). The node's store uses its
images in place: containers get their writable layer in the node's store,
nothing is copied, nothing is written to the shared store, and a store that
vanishes is reported, not fatal.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crio.api import api_pb2 as api
from crio.errors import ConfigError, NotFoundError, WrongStateError
from crio.storage import Store
from support.contract import unmount_under
from support.cri import Cri, container_config, pod_config
from support.daemon import CrioProcess
from support.images import busybox_rootfs_tar, digest, image_config, layer_tar, put_image

SHARED_NAME = "registry.example/shared/busybox:1"
EXTRA = layer_tar({"etc/motd": b"from the shared store\n"}, dirs=["etc"])


@dataclass
class Shared:
    writer: Path  # the writer's root (read-write)
    mounted: Path  # the same root, bind-mounted read-only: what nodes use
    image_id: str
    layer_ids: list[str]


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    base = Path(tempfile.mkdtemp(prefix="crio-ro-", dir="/var/tmp"))
    writer, mounted = base / "writer", base / "shared"
    mounted.mkdir()

    async def fill(driver: str) -> tuple[str, list[str]]:
        store = await Store.open(writer / "root", writer / "run", driver)
        try:
            image = await put_image(store, [busybox_rootfs_tar(), EXTRA], name=SHARED_NAME)
            return image.id, [x.id for x in await store.image_layers(image.id)]
        finally:
            await store.close()

    try:
        image_id, layer_ids = asyncio.run(fill("overlay"))
        asyncio.run(fill("vfs"))  # the same image for vfs nodes
        _run("mount", "--bind", str(writer / "root"), str(mounted))
        _run("mount", "-o", "remount,bind,ro", str(mounted))
        yield Shared(writer / "root", mounted, image_id, layer_ids)
    finally:
        unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    yield tmp_path / "root", tmp_path / "run"
    unmount_under(tmp_path)


def test_a_shared_image_is_used_in_place(shared: Shared, node) -> None:
    async def go() -> None:
        store = await Store.open(*node, "overlay", image_stores=[shared.mounted])
        try:
            image = await store.image(SHARED_NAME)
            assert image.id == shared.image_id
            assert await store.image_store_of(image.id) == shared.mounted
            assert [x.id for x in await store.image_layers(image.id)] == shared.layer_ids
            config = json.loads(await store.image_config(image.id))
            assert config["rootfs"]["diff_ids"] == [digest(busybox_rootfs_tar()), digest(EXTRA)]
            ctr = await store.create_container(image.id, names=["on-shared"])
            root = await store.mount_container(ctr.id)
            try:
                assert (root / "etc/motd").read_bytes() == b"from the shared store\n"
                (root / "etc/motd").write_bytes(b"node's own\n")
            finally:
                await store.unmount_container(ctr.id)
            # The container's layer is the node's; the shared layers were not copied.
            own = sorted(p.name for p in (node[0] / "overlay").iterdir() if len(p.name) == 64)
            assert own == [ctr.layer]
            assert not (node[0] / "overlay-images" / image.id).exists()
            assert (await store.layer(ctr.layer)).parent == shared.layer_ids[-1]
            upper = node[0] / "overlay" / ctr.layer / "diff" / "etc/motd"
            assert upper.read_bytes() == b"node's own\n"
            motd = shared.writer / "overlay" / shared.layer_ids[-1] / "diff/etc/motd"
            assert motd.read_bytes() == b"from the shared store\n"
            # The shared layer's original tar comes back from its tar-split.
            tar = b"".join([c async for c in store.layer_tar(shared.layer_ids[-1])])
            assert digest(tar) == digest(EXTRA)
            # Nothing of the shared store can be changed from here.
            for change in (
                store.delete_image(image.id),
                store.tag_image(image.id, "localhost/renamed:1"),
                store.delete_layer(shared.layer_ids[0]),
                store.mount_image(image.id),
            ):
                with pytest.raises(WrongStateError, match="read-only image store"):
                    await change
            await store.delete_container(ctr.id)
            assert [i.id for i in await store.images()] == [shared.image_id]
        finally:
            await store.close()

    asyncio.run(go())


def test_a_layer_pulled_onto_a_shared_base_stays_in_the_node(shared: Shared, node) -> None:
    extra = layer_tar({"etc/motd": b"node's own layer\n"}, dirs=["etc"])

    async def go() -> None:
        store = await Store.open(*node, "overlay", image_stores=[shared.mounted])
        try:
            # What a pull does when the image's base layers are in the shared store.
            top = shared.layer_ids[-1]
            layer = await store.put_layer(extra, parent=top, diff_digest=digest(extra))
            assert (node[0] / "overlay" / layer.id / "diff/etc/motd").exists()
            config = image_config([digest(busybox_rootfs_tar()), digest(EXTRA), digest(extra)])
            image = await store.create_image(
                config=config, top_layer=layer.id, names=["localhost/n:1"]
            )
            assert await store.image_store_of(image.id) == node[0]
            ctr = await store.create_container(image.id, names=["stacked"])
            root = await store.mount_container(ctr.id)
            try:
                assert (root / "etc/motd").read_bytes() == b"node's own layer\n"
                assert (root / "bin/busybox").is_file()  # from the shared base
            finally:
                await store.unmount_container(ctr.id)
            removed = await store.delete_image(image.id, force=True)
            assert removed.layers == (layer.id,)  # the shared layers stay where they are
        finally:
            await store.close()

    asyncio.run(go())


def test_the_storage_option_form_and_vfs(shared: Shared, node) -> None:
    async def go() -> None:
        options = [f"vfs.imagestore={shared.mounted}"]
        store = await Store.open(*node, "vfs", options)
        try:
            ctr = await store.create_container(SHARED_NAME, names=["vfs-on-shared"])
            root = await store.mount_container(ctr.id)
            assert (root / "etc/motd").read_bytes() == b"from the shared store\n"
            assert (root / "bin/busybox").is_file()
            await store.unmount_container(ctr.id)
        finally:
            await store.close()

    asyncio.run(go())


def test_a_vanished_store_is_reported_not_fatal(shared: Shared, node, caplog) -> None:
    gone = shared.mounted.parent / "unplugged"
    gone.mkdir(exist_ok=True)
    _run("mount", "--bind", "-o", "ro", str(shared.mounted), str(gone))

    async def go() -> None:
        store = await Store.open(*node, "overlay", image_stores=[gone, Path("/nonexistent/x")])
        try:
            assert [i.id for i in await store.images()] == [shared.image_id]
            subprocess.run(["umount", str(gone)], check=True)
            assert await store.images() == []  # gone: reported, and no images from it
            with pytest.raises(NotFoundError):
                await store.create_container(SHARED_NAME)
            said = caplog.text
            assert "store /nonexistent/x is unusable (its images are left out): " in said
            assert "/nonexistent/x does not exist" in said
            assert f"store {gone} is unusable (its images are left out): {gone} holds no" in said
            _run("mount", "--bind", "-o", "ro", str(shared.mounted), str(gone))
            assert [i.id for i in await store.images()] == [shared.image_id]  # back
            assert f"read-only image store {gone} reads again" in caplog.text
        finally:
            await store.close()

    caplog.set_level("INFO", logger="crio.storage")
    try:
        asyncio.run(go())
    finally:
        unmount_under(gone)


def test_btrfs_refuses_image_stores_by_name(shared: Shared, node) -> None:
    with pytest.raises(ConfigError, match="additionalimagestores: a btrfs layer is a snapshot"):
        asyncio.run(Store.open(*node, "btrfs", image_stores=[shared.mounted]))


def test_crio_runs_a_pod_from_a_shared_image_and_kpod_and_podman_see_where(
    shared: Shared,
) -> None:
    crio = CrioProcess({"crio": {"additionalimagestores": [str(shared.mounted)]}})
    try:
        crio.start()
        with crio.channel() as channel:
            cri = Cri(channel)
            request = api.ImageStatusRequest(image=api.ImageSpec(image=SHARED_NAME))
            status = crio.image_stub(channel).ImageStatus(request)
            assert status.image.id == shared.image_id
            pod = cri.run_pod(pod_config("shared-pod"))
            command = ["sh", "-c", "cat /etc/motd > /copied && sleep 3600"]
            cid = cri.create(pod, container_config("c", command, image=SHARED_NAME), start=True)
            wait = "while ! test -s /copied; do sleep 0.1; done; cat /copied"
            copied = cri.exec(cid, ["sh", "-c", wait], timeout=60).stdout
            assert copied == b"from the shared store\n"
            listed = _kpod(crio, "images")
            assert listed[0].split()[-1] == "STORE"
            assert listed[1].split()[-1] == str(shared.mounted)
            cri.remove_everything()
        # podman, told of the same shared store, sees the image there, read-only.
        # (After the pod: podman leaves ROOT/overlay bind-mounted over itself, which
        # hides the mounts crio made before it; see the overlay driver's notes.)
        podman = _podman(crio, shared, "images", "--format", "{{.ID}} {{.ReadOnly}}")
        assert podman.split() == [shared.image_id[:12], "true"]
        assert crio.stop() == 0
    finally:
        crio.cleanup()


def _kpod(crio: CrioProcess, *args: str) -> list[str]:
    kpod = str(Path(sys.executable).with_name("kpod"))
    done = subprocess.run(
        [kpod, "--config", str(crio.config), "--config-dir", str(crio.base), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()


def _podman(crio: CrioProcess, shared: Shared, *args: str) -> str:
    conf = crio.base / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{crio.base}/root"\n'
        f'runroot = "{crio.base}/runroot"\n'
        f'[storage.options]\nadditionalimagestores = ["{shared.mounted}"]\n'
    )
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf), "CONTAINERS_CONF": "/dev/null"}
    done = subprocess.run(
        ["podman", "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout
