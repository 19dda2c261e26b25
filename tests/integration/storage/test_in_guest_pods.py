"""Pods that need what only the storage guest's kernel has; run there by test_guest_drivers.py.

* crio with ``storage_driver = "devicemapper"`` (its defaults: a pool on loop
  files, xfs) pulls an image from a registry and runs a container that
  writes to its rootfs, a thin device of its own;
* a real NFS export (the guest's nfsd) of a store one writer filled, mounted
  read-only over NFS as crio's ``additionalimagestores``: a pod runs from an
  image that exists only there.

On any other machine these skip: the host module boots the guest and runs
them there with ``CRIO_STORAGE_GUEST=1``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from crio.api import api_pb2 as api
from crio.errors import StorageError
from crio.storage import Store
from crio_plugins.storage_devicemapper import dm
from support.cri import Cri, container_config, pod_config
from support.daemon import CrioProcess
from support.images import busybox_rootfs_tar, digest, layer_tar, put_image, write_oci_layout
from support.nfs import nfs_export
from support.registry import Registry, skopeo_push

pytestmark = pytest.mark.skipif(
    os.environ.get("CRIO_STORAGE_GUEST") != "1",
    reason="runs inside the storage guest (tests/integration/storage/test_guest_drivers.py)",
)

SCRATCH = Path(os.environ.get("CRIO_GUEST_SCRATCH", "/run/scratch"))


def _sh(command: str) -> str:
    # No udev in the guest: dmsetup makes and removes the /dev/mapper nodes itself.
    env = {**os.environ, "DM_DISABLE_UDEV": "1"}
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, check=False, env=env
    )
    assert done.returncode == 0, f"{command}: {done.stderr.strip() or done.stdout.strip()}"
    return done.stdout


def _wait_written(cri: Cri, cid: str, path: str) -> bytes:
    wait = f"while ! test -s {path}; do sleep 0.2; done; cat {path}"
    return cri.exec(cid, ["sh", "-c", wait], timeout=120).stdout


def test_a_pod_pulls_and_writes_on_devicemapper() -> None:
    registry = Registry(base=SCRATCH / "registry")
    registry.start(timeout=120)
    files = SCRATCH / "dm-files"
    files.mkdir(parents=True, exist_ok=True)
    layout = write_oci_layout(files / "layout", [busybox_rootfs_tar()])
    skopeo_push(f"oci:{layout.path}:latest", registry, "guest/busybox:1")
    (files / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    (files / "registries.conf").write_text(
        f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    root = SCRATCH / "dm-root"
    crio = CrioProcess({
        "crio": {"root": str(root), "storage_driver": "devicemapper"},
        "crio.image": {"signature_policy": str(files / "policy.json"),
                       "registries_conf": str(files / "registries.conf")},
    })  # fmt: skip
    image = f"{registry.host}/guest/busybox:1"
    try:
        crio.start(timeout=600)
        with crio.channel() as channel:
            pulled = crio.image_stub(channel).PullImage(
                api.PullImageRequest(image=api.ImageSpec(image=image)), timeout=600
            )
            assert pulled.image_ref
            cri = Cri(channel)
            pod = cri.run_pod(pod_config("dm-pod"))
            command = ["sh", "-c", "echo on a thin device > /written && sleep 3600"]
            cid = cri.create(pod, container_config("writer", command, image=image), start=True)
            assert _wait_written(cri, cid, "/written") == b"on a thin device\n"
            # The rootfs is a filesystem on the container's own thin device.
            mounts = _sh("cat /proc/self/mounts")
            rootfs = [line for line in mounts.splitlines() if f"{root}/devicemapper/mnt/" in line]
            assert len(rootfs) == 1 and rootfs[0].startswith("/dev/mapper/container-")
            device = rootfs[0].split()[0].removeprefix("/dev/mapper/")
            assert " thin " in _sh(f"dmsetup table {device}")
            assert "xfs" in rootfs[0].split()[2]  # dm.fs's default where xfs is there
            written = Path(rootfs[0].split()[1]) / "rootfs" / "written"
            assert written.read_text() == "on a thin device\n"
            cri.remove_everything()
            assert device not in _sh("dmsetup ls")  # unmounted, and its device removed
        assert crio.stop() == 0
        assert "with driver devicemapper" in crio.log_text()
    finally:
        crio.cleanup()
        registry.cleanup()


def test_a_pod_runs_from_an_image_only_on_an_nfs_store() -> None:
    export, client = SCRATCH / "nfs-export", Path("/run/nfs-images")
    writer = export / "root"

    async def fill() -> str:
        store = await Store.open(writer, SCRATCH / "nfs-writer-run", "overlay")
        try:
            motd = layer_tar({"etc/motd": b"served over nfs\n"}, dirs=["etc"])
            image = await put_image(store, [busybox_rootfs_tar(), motd], name="nfs.example/bb:1")
            return image.id
        finally:
            await store.close()

    image_id = asyncio.run(fill())
    node = SCRATCH / "nfs-node"
    with nfs_export(export, client):
        assert _sh(f"stat -f -c %T {client}").strip() == "nfs"
        _run_pod_from_nfs(node, client, image_id)


def _run_pod_from_nfs(node: Path, client: Path, image_id: str) -> None:
    crio = CrioProcess({"crio": {"root": str(node), "storage_driver": "overlay",
                                 "additionalimagestores": [str(client / "root")]}})  # fmt: skip
    try:
        crio.start(timeout=600)
        with crio.channel() as channel:
            status = crio.image_stub(channel).ImageStatus(
                api.ImageStatusRequest(image=api.ImageSpec(image="nfs.example/bb:1"))
            )
            assert status.image.id == image_id
            cri = Cri(channel)
            pod = cri.run_pod(pod_config("nfs-pod"))
            command = ["sh", "-c", "cat /etc/motd > /copied && sleep 3600"]
            config = container_config("c", command, image="nfs.example/bb:1")
            cid = cri.create(pod, config, start=True)
            assert _wait_written(cri, cid, "/copied") == b"served over nfs\n"
            # The image was used in place: the node holds the container's layer only.
            own = [p.name for p in (node / "overlay").iterdir() if len(p.name) == 64]
            assert len(own) == 1 and not (node / "overlay-images" / image_id).exists()
            lower = (node / "overlay" / own[0] / "lower").read_text()
            assert all((client / "root/overlay" / entry).exists() for entry in lower.split(":"))
            cri.remove_everything()
        assert crio.stop() == 0
    finally:
        crio.cleanup()


def test_a_given_thin_pool_is_used_and_an_occupied_one_refused() -> None:
    """dm.thinpooldev: the operator's pool (here two loop files and dmsetup, as an
    LVM thin pool would be); crio keeps its devices there and never removes it."""
    work = SCRATCH / "given-pool"
    work.mkdir(parents=True, exist_ok=True)
    loops: list[str] = []
    pool = "crio-test-given-pool"
    options = ["dm.thinpooldev=/dev/mapper/" + pool, "dm.basesize=128M", "dm.fs=ext4"]
    try:
        for name, size in (("meta", "64M"), ("data", "1G")):
            _sh(f"truncate -s {size} {work}/{name}")
            loops.append(_sh(f"losetup --find --show {work}/{name}").strip())
        meta, data = loops
        sectors = 1 << 21  # 1 GiB
        _sh(f"dmsetup create {pool} --table '0 {sectors} thin-pool {meta} {data} 128 32768'")

        async def use() -> None:
            store = await Store.open(work / "root", work / "run", "devicemapper", options)
            try:
                extra = layer_tar({"etc/motd": b"in the given pool\n"}, dirs=["etc"])
                image = await put_image(store, [busybox_rootfs_tar(), extra], name="l/p:1")
                layers = await store.image_layers(image.id)
                assert [x.diff_digest for x in layers][-1] == digest(extra)
                ctr = await store.create_container(image.id, names=["given"])
                root = await store.mount_container(ctr.id)
                assert (root / "etc/motd").read_bytes() == b"in the given pool\n"
                # The container's device is a thin device of the operator's pool.
                source = [m.split()[0] for m in _sh("cat /proc/self/mounts").splitlines()
                          if m.split()[1] in (str(root), str(root.parent))]  # fmt: skip
                table = _sh(f"dmsetup table {source[0]}").split()
                pool_dev = _sh(f"dmsetup info -c --noheadings -o major,minor {pool}").strip()
                assert table[2:4] == ["thin", pool_dev], table
                await store.unmount_container(ctr.id)
                status = dict(await store.driver.status())
                assert status["Pool Name"] == pool and "Data loop file" not in status
            finally:
                await store.close()
            assert pool in _sh("dmsetup ls")  # the operator's pool stays

        asyncio.run(use())
        # Another root on the same pool: it holds data crio's metadata does not know.
        with pytest.raises(StorageError, match="cannot take over thin pool"):
            asyncio.run(Store.open(work / "other", work / "run2", "devicemapper", options))
    finally:
        home = work / "root" / "devicemapper"
        if home.exists():  # crio's devices in the pool, if a failure left any active
            st = os.stat(home)
            prefix = dm.device_prefix(st.st_dev, st.st_ino)
            for line in _sh("dmsetup ls").splitlines():
                if line.startswith(prefix):
                    _sh(f"dmsetup remove {line.split()[0]} || true")
        _sh(f"dmsetup remove {pool} || true")
        for loop in loops:
            subprocess.run(["losetup", "-d", loop], check=False)
