"""Interop with Debian's real skopeo (and podman): each reads what the other stored."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crio.storage import Store
from support.images import busybox_rootfs_tar, digest, layer_tar, put_image, write_oci_layout

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")

SECOND = layer_tar(
    {"etc/motd": b"crio\n", "bin/.wh.ls": b"", "data/big": bytes(range(256)) * 4000},
    dirs=["etc", "bin", "data"],
)


def _diff_ids_of_oci(path: Path) -> list[str]:
    index = json.loads((path / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].partition(":")[2]
    manifest = json.loads((path / "blobs/sha256" / manifest_digest).read_bytes())
    out = []
    for layer in manifest["layers"]:
        blob = (path / "blobs/sha256" / layer["digest"].partition(":")[2]).read_bytes()
        if "gzip" in layer["mediaType"]:
            blob = gzip.decompress(blob)
        out.append("sha256:" + hashlib.sha256(blob).hexdigest())
    return out


def test_skopeo_reads_what_crio_stored(dirs) -> None:
    async def store_it() -> str:
        store = await Store.open(dirs.root, dirs.runroot, "overlay")
        image = await put_image(store, [busybox_rootfs_tar(), SECOND], name="localhost/crio:1")
        await store.close()
        return image.id

    image_id = asyncio.run(store_it())
    inspected = json.loads(dirs.skopeo("inspect", dirs.ref("localhost/crio:1")).stdout)
    assert inspected["Name"] == "localhost/crio"
    config = json.loads(dirs.skopeo("inspect", "--config", dirs.ref("localhost/crio:1")).stdout)
    assert config["rootfs"]["diff_ids"] == [digest(busybox_rootfs_tar()), digest(SECOND)]
    out = dirs.base / "out"
    dirs.skopeo("copy", dirs.ref("localhost/crio:1"), f"oci:{out}:copied")
    # skopeo rebuilt each layer from our files and tar-split: same diff digests as applied
    assert _diff_ids_of_oci(out) == [digest(busybox_rootfs_tar()), digest(SECOND)]
    listed = dirs.podman("images", "--format", "json").stdout
    assert [i["Id"] for i in json.loads(listed)] == [image_id]


def test_crio_reads_what_skopeo_stored(dirs) -> None:
    oci = write_oci_layout(dirs.base / "oci", [busybox_rootfs_tar(), SECOND], ref="v1")
    dirs.skopeo("copy", f"oci:{oci.path}:v1", dirs.ref("localhost/from-skopeo:v1"))

    async def check() -> None:
        store = await Store.open(dirs.root, dirs.runroot, "")
        assert store.driver.name == "overlay"  # the driver ROOT already uses
        image = await store.image("localhost/from-skopeo:v1")
        assert image.id == oci.image_id
        assert image.digest == oci.manifest_digest
        layers = await store.image_layers(image.id)
        assert [x.diff_digest for x in layers] == list(oci.diff_ids)
        # a pull of the same image would find its layers and skip them
        assert (await store.find_layer(oci.diff_ids[0], None)) == layers[0]
        container = await store.create_container(image.id, names=["from-skopeo"])
        root = await store.mount_container(container.id)
        try:
            assert (root / "etc/motd").read_bytes() == b"crio\n"
            assert (root / "bin/busybox").exists() and not (root / "bin/ls").exists()
            (root / "written").write_text("rw layer")
        finally:
            assert await store.unmount_container(container.id) == 0
        await store.delete_container(container.id)
        tar = b"".join([chunk async for chunk in store.layer_tar(layers[1].id)])
        assert digest(tar) == oci.diff_ids[1]
        await store.close()

    asyncio.run(check())
    confd = dirs.base / "crio.conf.d"
    confd.mkdir()
    (dirs.base / "crio.conf").write_text(
        f'[crio]\nroot = "{dirs.root}"\nrunroot = "{dirs.runroot}"\n'
    )
    kpod = str(Path(sys.executable).with_name("kpod"))
    listed = subprocess.run(
        [kpod, "--config", str(dirs.base / "crio.conf"), "--config-dir", str(confd), "images"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert listed[1].split()[:3] == ["localhost/from-skopeo", "v1", oci.image_id[:12]]
