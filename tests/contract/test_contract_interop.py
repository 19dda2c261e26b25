"""The driver contract: skopeo and podman read what crio stored, and skopeo writes for crio.

They are Debian's (containers/storage inside), given
``containers-storage:[DRIVER@ROOT+RUNROOT]`` and a private storage.conf.
A driver they do not know (a vendor's) skips these cases, saying so.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.images import busybox_rootfs_tar, digest, layer_tar, put_image, write_oci_layout

#: The graph drivers Debian's podman and skopeo are built with.
KNOWN_TO_PODMAN = ("overlay", "vfs", "btrfs", "devicemapper", "aufs", "zfs")

SECOND = layer_tar(
    {"etc/motd": b"interop\n", "bin/.wh.ls": b"", "data/blob": bytes(range(256)) * 400},
    dirs=["etc", "bin", "data"],
)


class Tools:
    """skopeo and podman on one test's store."""

    def __init__(self, contract) -> None:
        self.contract = contract
        self.base = contract.top / "tools"
        self.base.mkdir(parents=True, exist_ok=True)
        conf = self.base / "storage.conf"
        conf.write_text(
            f'[storage]\ndriver = "{contract.driver}"\n'
            f'graphroot = "{contract.root}"\nrunroot = "{contract.runroot}"\n'
        )
        (self.base / "policy.json").write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
        for name in ("registries.conf", "containers.conf"):
            (self.base / name).write_text("")
        self.env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(conf),
            "CONTAINERS_REGISTRIES_CONF": str(self.base / "registries.conf"),
            "CONTAINERS_CONF": str(self.base / "containers.conf"),
            "TMPDIR": str(self.base),
        }

    def ref(self, name: str) -> str:
        c = self.contract
        # Driver options ride in the reference: skopeo has no flag for them.
        options = ",".join([*c.env.options, *c.env.tool_options])
        store = f"{c.driver}@{c.root}+{c.runroot}" + (f":{options}" if options else "")
        return f"containers-storage:[{store}]{name}"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(argv[:3])}...: {done.stderr.strip()}"
        return done

    def skopeo(self, *args: str) -> str:
        return self._run(["skopeo", "--policy", str(self.base / "policy.json"), *args]).stdout

    def podman(self, *args: str) -> str:
        c = self.contract
        argv = ["podman", "--root", str(c.root), "--runroot", str(c.runroot)]
        argv += ["--storage-driver", c.driver, "--cgroup-manager", "cgroupfs"]
        argv += ["--events-backend", "file", "--tmpdir", str(self.base / "podman-tmp")]
        for option in [*c.env.options, *c.env.tool_options]:
            argv += ["--storage-opt", option]
        return self._run([*argv, *args]).stdout


@pytest.fixture
def tools(contract) -> Tools:
    for tool in ("skopeo", "podman"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    made = Tools(contract)
    if contract.driver not in KNOWN_TO_PODMAN:
        pytest.skip(f"podman and skopeo do not know driver {contract.driver}")
    return made


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


def test_skopeo_and_podman_read_what_crio_stored(contract, tools: Tools) -> None:
    async def store_it() -> tuple[str, str]:
        store = await contract.open()
        try:
            image = await put_image(store, [busybox_rootfs_tar(), SECOND], name="localhost/ci:1")
            ctr = await store.create_container(image.id, names=["crio-made"])
            return image.id, ctr.id
        finally:
            await store.close()

    image_id, ctr_id = asyncio.run(store_it())
    config = json.loads(tools.skopeo("inspect", "--config", tools.ref("localhost/ci:1")))
    assert config["rootfs"]["diff_ids"] == [digest(busybox_rootfs_tar()), digest(SECOND)]
    out = tools.base / "oci"
    tools.skopeo("copy", tools.ref("localhost/ci:1"), f"oci:{out}:copied")
    # skopeo rebuilt each layer from the driver's files and the tar-split.
    assert _diff_ids_of_oci(out) == [digest(busybox_rootfs_tar()), digest(SECOND)]
    assert [i["Id"] for i in json.loads(tools.podman("images", "--format", "json"))] == [image_id]
    listed = tools.podman("ps", "-a", "--external", "--format", "{{.ID}} {{.Names}}")
    assert f"{ctr_id[:12]} crio-made" in listed
    mounted = Path(tools.podman("mount", ctr_id).strip())
    try:
        assert (mounted / "etc/motd").read_bytes() == b"interop\n"
        assert not os.path.lexists(mounted / "bin/ls") and (mounted / "bin/cat").is_symlink()
    finally:
        tools.podman("umount", ctr_id)


def test_crio_reads_what_skopeo_wrote(contract, tools: Tools) -> None:
    oci = write_oci_layout(tools.base / "src", [busybox_rootfs_tar(), SECOND], ref="v1")
    tools.skopeo("copy", f"oci:{oci.path}:v1", tools.ref("localhost/from-skopeo:v1"))

    async def check() -> None:
        store = await contract.open()
        try:
            image = await store.image("localhost/from-skopeo:v1")
            assert image.id == oci.image_id and image.digest == oci.manifest_digest
            layers = await store.image_layers(image.id)
            assert [x.diff_digest for x in layers] == list(oci.diff_ids)
            ctr = await store.create_container(image.id, names=["from-skopeo"])
            root = await store.mount_container(ctr.id)
            try:
                assert (root / "etc/motd").read_bytes() == b"interop\n"
                assert (root / "bin/busybox").exists() and not os.path.lexists(root / "bin/ls")
                (root / "written").write_bytes(b"by crio")
            finally:
                assert await store.unmount_container(ctr.id) == 0
            tar = b"".join([chunk async for chunk in store.layer_tar(layers[1].id)])
            assert digest(tar) == oci.diff_ids[1]
        finally:
            await store.close()

    asyncio.run(check())
