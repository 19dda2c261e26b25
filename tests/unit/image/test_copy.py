"""The copy engine between file transports: verification and format round trips."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from crio.image import manifest as mf
from crio.image.copy import CopyOptions, CopyResult, Progress, copy_image
from crio.image.digest import DigestMismatchError
from crio.image.transport import TransportContext
from crio.plugins import Plugins
from support.image_shapes import BuiltImage, build_layout

CTX = TransportContext()


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    found = Plugins()
    found.load_entry_points()
    return found


def copy(plugins: Plugins, src: str, dst: str, **options: object) -> CopyResult:
    async def run() -> CopyResult:
        s_name, _, s_ref = src.partition(":")
        d_name, _, d_ref = dst.partition(":")
        s_transport, d_transport = plugins.image_transport(s_name), plugins.image_transport(d_name)
        assert s_transport is not None and d_transport is not None
        source = await s_transport.open_source(s_ref, CTX)
        dest = await d_transport.open_destination(d_ref, CTX)
        try:
            return await copy_image(source, dest, CopyOptions(**options))  # type: ignore[arg-type]
        finally:
            await source.close()
            await dest.close()

    return asyncio.run(run())


def blobs(root: Path) -> set[str]:
    return (
        {p.name for p in (root / "blobs" / "sha256").iterdir()}
        if (root / "blobs").exists()
        else set()
    )


@pytest.mark.parametrize("shape", ["oci", "zstd", "plain", "index"])
def test_oci_to_oci_keeps_digests(plugins: Plugins, tmp_path: Path, shape: str) -> None:
    image = build_layout(tmp_path / "src", shape)
    events: list[Progress] = []
    result = copy(plugins, image.source, f"oci:{tmp_path / 'out'}:copy", progress=events.append)
    expected = image.instances[mf.host_platform().architecture]
    assert result.manifest_digest == expected
    assert result.source_digest == image.manifest_digest
    assert result.config_digest == image.config_digest
    assert {d[7:] for d in image.layer_digests} <= blobs(tmp_path / "out")
    assert {e.kind for e in events} >= {"start", "done"}
    assert sorted({e.index for e in events if e.kind == "done"}) == [0, 1]
    # skopeo reads what we wrote.
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'out'}:copy"],
        capture_output=True,
        check=True,
    ).stdout
    assert mf.manifest_digest(out) == expected


def test_present_blobs_are_not_copied_again(plugins: Plugins, tmp_path: Path) -> None:
    image = build_layout(tmp_path / "src", "oci")
    copy(plugins, image.source, f"oci:{tmp_path / 'out'}:a")
    events: list[Progress] = []
    copy(plugins, image.source, f"oci:{tmp_path / 'out'}:b", progress=events.append)
    assert [e.kind for e in events if e.index >= 0] == ["skip", "skip"]


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_layer_fails_naming_it_and_leaves_nothing(plugins: Plugins, tmp_path: Path) -> None:
    image = build_layout(tmp_path / "src", "oci")
    bad = image.layer_digests[0]
    _corrupt(tmp_path / "src" / "blobs" / "sha256" / bad[7:])
    with pytest.raises(DigestMismatchError, match=f"layer blob {bad} \\(layer 1 of 2\\)"):
        copy(plugins, image.source, f"oci:{tmp_path / 'out'}:x")
    assert blobs(tmp_path / "out") == set()
    assert not (tmp_path / "out" / "index.json").exists()


def test_wrong_diff_id_fails(plugins: Plugins, tmp_path: Path) -> None:
    root = tmp_path / "src"
    image = build_layout(root, "plain")
    # A config that lies about the second layer, with a manifest that names it.
    config = json.loads((root / "blobs/sha256" / image.config_digest[7:]).read_bytes())
    config["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64
    raw = json.dumps(config).encode()
    import hashlib

    new_config = "sha256:" + hashlib.sha256(raw).hexdigest()
    (root / "blobs/sha256" / new_config[7:]).write_bytes(raw)
    manifest = json.loads((root / "blobs/sha256" / image.manifest_digest[7:]).read_bytes())
    manifest["config"].update(digest=new_config, size=len(raw))
    mraw = json.dumps(manifest).encode()
    mdigest = "sha256:" + hashlib.sha256(mraw).hexdigest()
    (root / "blobs/sha256" / mdigest[7:]).write_bytes(mraw)
    index = json.loads((root / "index.json").read_text())
    index["manifests"][0].update(digest=mdigest, size=len(mraw))
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(
        DigestMismatchError, match=r"layer 2 of 2.*does not match the config's diff_id"
    ):
        copy(plugins, image.source, f"oci:{tmp_path / 'out'}:x")


def test_reference_digest_must_match(plugins: Plugins, tmp_path: Path) -> None:
    image = build_layout(tmp_path / "src", "oci")
    with pytest.raises(DigestMismatchError, match="expected sha256:0000"):
        copy(
            plugins, image.source, f"oci:{tmp_path / 'out'}:x", expected_digest="sha256:" + "0" * 64
        )


def test_docker_archive_round_trip_with_docker_load_layout(
    plugins: Plugins, tmp_path: Path
) -> None:
    image = build_layout(tmp_path / "src", "oci")
    archive = tmp_path / "img.tar"
    result = copy(plugins, image.source, f"docker-archive:{archive}:example.com/team/app:v1")
    assert result.media_type == mf.DOCKER_SCHEMA2
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        [entry] = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert entry["RepoTags"] == ["example.com/team/app:v1"]
    # docker-archive keeps layers uncompressed, named by their diff_ids.
    assert entry["Layers"] == [f"{d[7:]}.tar" for d in image.diff_ids]
    assert set(entry["Layers"]) <= names
    # skopeo reads it, and so do we (back into OCI, config unchanged).
    subprocess.run(
        ["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True, check=True
    )
    back = copy(
        plugins, f"docker-archive:{archive}:example.com/team/app:v1", f"oci:{tmp_path / 'back'}:x"
    )
    assert back.config_digest == image.config_digest


def test_gzipped_docker_archive_made_by_skopeo_is_read(plugins: Plugins, tmp_path: Path) -> None:
    image = build_layout(tmp_path / "src", "oci")
    archive = tmp_path / "sk.tar"
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "-q",
            image.source,
            f"docker-archive:{archive}:sk/img:1",
        ],
        check=True,
        capture_output=True,
    )
    gz = tmp_path / "sk.tar.gz"
    gz.write_bytes(gzip.compress(archive.read_bytes()))
    result = copy(plugins, f"docker-archive:{gz}", f"oci:{tmp_path / 'out'}:x")
    assert result.config_digest == image.config_digest


def test_oci_archive_round_trip(plugins: Plugins, tmp_path: Path) -> None:
    image: BuiltImage = build_layout(tmp_path / "src", "zstd")
    archive = tmp_path / "img.oci.tar"
    first = copy(plugins, image.source, f"oci-archive:{archive}:v1")
    subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{archive}:v1"], capture_output=True, check=True
    )
    again = copy(plugins, f"oci-archive:{archive}:v1", f"oci:{tmp_path / 'out'}:v1")
    assert first.manifest_digest == again.manifest_digest == image.manifest_digest
