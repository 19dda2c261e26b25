"""What only the btrfs driver does: snapshots, read-only image layers, qgroup limits,
its options, its refusal off btrfs, and a crio running a pod on it.

The shared cases (layers, whiteouts, diffs, restarts, skopeo and podman) are
the contract suite's (tests/contract). Everything lives on a btrfs file
system on a loop file that this module makes and destroys.
"""

from __future__ import annotations

import asyncio
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio.errors import ConfigError, UnsupportedError
from crio.storage import Store
from support.contract import btrfs_loop, btrfs_missing
from support.cri import BUSYBOX_IMAGE, Cri, container_config, pod_config
from support.daemon import CrioProcess
from support.images import busybox_rootfs_tar, layer_tar, put_image


@pytest.fixture(scope="module")
def fs() -> Iterator[Path]:
    missing = btrfs_missing()
    if missing:
        pytest.skip(missing)
    with btrfs_loop() as mnt:
        yield mnt


@pytest.fixture
def dirs(fs: Path, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    top = fs / request.node.name[:40]
    return top / "root", top / "run"


def _show(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["btrfs", "subvolume", "show", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def test_children_are_snapshots_and_image_layers_are_read_only(dirs) -> None:
    async def go() -> None:
        store = await Store.open(*dirs, "btrfs")
        try:
            extra = layer_tar({"etc/motd": b"snap\n"}, dirs=["etc"])
            image = await put_image(store, [busybox_rootfs_tar(), extra], name="localhost/s:1")
            base, child = await store.image_layers(image.id)
            ctr = await store.create_container(image.id, names=["snap"])
            home = store.root / "btrfs" / "subvolumes"
            shown = {x: _show(home / x) for x in (base.id, child.id, ctr.layer)}
            assert shown[base.id]["Parent UUID"] == "-"
            assert shown[child.id]["Parent UUID"] == shown[base.id]["UUID"]
            assert shown[ctr.layer]["Parent UUID"] == shown[child.id]["UUID"]
            assert "readonly" in shown[child.id]["Flags"]
            assert "readonly" not in shown[ctr.layer]["Flags"]
            mounted = await store.mount_image(image.id)
            try:
                with pytest.raises(OSError) as caught:
                    (mounted / "etc/motd").write_bytes(b"no")
                assert caught.value.errno == errno.EROFS
            finally:
                await store.unmount_image(image.id)
            status = dict(await store.driver.status())
            assert status["Backing Filesystem"] == "btrfs"
        finally:
            await store.close()

    asyncio.run(go())


def test_btrfs_size_limits_what_a_container_may_write(dirs) -> None:
    async def go() -> None:
        options = ["btrfs.size=24M", "btrfs.min_space=16M"]
        store = await Store.open(*dirs, "btrfs", options)
        try:
            image = await put_image(store, [busybox_rootfs_tar()], name="localhost/q:1")
            ctr = await store.create_container(image.id, names=["quota"])
            assert dict(await store.driver.status())["Qgroups"] == "enabled"
            limit = await store.driver.metadata(ctr.layer)
            assert limit["Size Limit"] == str(24 << 20)
            root = await store.mount_container(ctr.id)
            try:
                (root / "small").write_bytes(b"s" * (4 << 20))
                with pytest.raises(OSError) as caught, open(root / "big", "wb") as handle:
                    for _ in range(64):
                        handle.write(b"b" * (1 << 20))
                        handle.flush()
                assert caught.value.errno == errno.EDQUOT
            finally:
                await store.unmount_container(ctr.id)
            # A full container is still removed (its limit is lifted first).
            await store.delete_container(ctr.id)
            assert not (store.root / "btrfs" / "quotas" / ctr.layer).exists()
            assert not await store.driver.exists(ctr.layer)
        finally:
            await store.close()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["btrfs.size=8M", "btrfs.min_space=16M"], "btrfs.size: 8388608 bytes is less than"),
        (["btrfs.mountopt=nodev"], "btrfs.mountopt: the btrfs driver mounts nothing"),
        (["btrfs.colour=blue"], "unknown btrfs option 'colour'"),
        (["btrfs.size=lots"], "btrfs.size: got 'lots', expected a size"),
    ],
)
def test_bad_options_are_refused_by_name(dirs, options: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        asyncio.run(Store.open(*dirs, "btrfs", options))
    assert caught.value.key == "crio.storage_option"


def test_btrfs_is_refused_off_btrfs(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match=r"storage driver btrfs: .* is not on a btrfs file"):
        asyncio.run(Store.open(tmp_path / "root", tmp_path / "run", "btrfs"))


def test_crio_runs_a_pod_on_btrfs(fs: Path) -> None:
    root = fs / "crio-root"
    crio = CrioProcess({"crio": {"root": str(root), "storage_driver": "btrfs"}})
    try:

        async def seed() -> None:
            store = await Store.open(root, crio.base / "runroot", "btrfs")
            try:
                await put_image(store, [busybox_rootfs_tar()], name=BUSYBOX_IMAGE)
            finally:
                await store.close()

        asyncio.run(seed())
        crio.start()
        with crio.channel() as channel:
            cri = Cri(channel)
            pod = cri.run_pod(pod_config("btrfs-pod"))
            command = ["sh", "-c", "echo on btrfs > /written && sleep 3600"]
            cid = cri.create(pod, container_config("writer", command), start=True)
            wait = "while ! test -s /written; do sleep 0.1; done; cat /written"
            assert cri.exec(cid, ["sh", "-c", wait], timeout=60).stdout == b"on btrfs\n"
            home = root / "btrfs" / "subvolumes"
            layers = [p for p in home.iterdir() if (p / "written").exists()]
            assert len(layers) == 1 and (layers[0] / "written").read_text() == "on btrfs\n"
            cri.remove_everything()
        assert crio.stop() == 0
        assert "with driver btrfs" in crio.log_text()
    finally:
        crio.cleanup()
