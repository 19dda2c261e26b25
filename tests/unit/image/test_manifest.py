"""Manifests: parsing every format, schema 1 payloads, platform choice, conversion."""

from __future__ import annotations

import base64
import json

import pytest

from crio.errors import NotFoundError
from crio.image import convert
from crio.image import manifest as mf
from crio.image.digest import digest_of

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_schema1(payload_doc: dict) -> tuple[bytes, bytes]:
    """A prettyjws manifest the way libtrust lays it out; returns (signed, payload)."""
    payload = json.dumps(payload_doc, indent=3).encode()
    head = payload[:-2]  # up to the closing "\n}"
    tail = payload[-2:]
    protected = _b64(json.dumps({"formatLength": len(head), "formatTail": _b64(tail)}).encode())
    sigs = (
        ',\n   "signatures": [{"header": {"alg": "ES256"}, "signature": "x", '
        f'"protected": "{protected}"}}]'
    )
    return head + sigs.encode() + tail, payload


SCHEMA1 = {
    "schemaVersion": 1,
    "name": "team/app",
    "tag": "v1",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": D2}, {"blobSum": mf.EMPTY_LAYER_GZIP}, {"blobSum": D1}],
    "history": [
        {"v1Compatibility": json.dumps({"id": "c", "created": "t3", "config": {"Cmd": ["sh"]}})},
        {"v1Compatibility": json.dumps({"id": "b", "throwaway": True, "created": "t2"})},
        {"v1Compatibility": json.dumps({"id": "a", "created": "t1"})},
    ],
}


def test_signed_schema1_digest_is_of_the_payload() -> None:
    signed, payload = signed_schema1(SCHEMA1)
    assert mf.guess_media_type(signed) == mf.DOCKER_SCHEMA1_SIGNED
    assert mf.schema1_payload(signed) == payload
    assert mf.manifest_digest(signed, mf.DOCKER_SCHEMA1_SIGNED) == digest_of(payload)
    parsed = mf.parse(signed)
    assert isinstance(parsed, mf.Schema1Manifest)
    assert [layer.digest for layer in parsed.layers] == [D1, mf.EMPTY_LAYER_GZIP, D2]  # base first
    assert [d.digest for d in mf.layer_descriptors(parsed)] == [D1, D2]
    config = json.loads(
        convert.schema1_to_config(parsed, ["sha256:" + "e" * 64, "sha256:" + "f" * 64])
    )
    assert config["rootfs"]["diff_ids"][1] == "sha256:" + "f" * 64
    assert config["config"] == {"Cmd": ["sh"]} and "id" not in config
    assert [h.get("empty_layer", False) for h in config["history"]] == [False, True, False]


def test_tampered_schema1_signature_header_is_refused() -> None:
    signed, _ = signed_schema1(SCHEMA1)
    doc = json.loads(signed)
    doc["signatures"][0]["protected"] = _b64(b'{"formatLength": 99999999, "formatTail": ""}')
    with pytest.raises(mf.ManifestError, match="formatLength"):
        mf.schema1_payload(json.dumps(doc).encode())


def _index(*platforms: tuple[str, str, str]) -> mf.Index:
    entries = [
        {
            "mediaType": mf.OCI_MANIFEST,
            "digest": f"sha256:{i:064x}",
            "size": 1,
            "platform": {"os": o, "architecture": a, **({"variant": v} if v else {})},
        }
        for i, (o, a, v) in enumerate(platforms)
    ]
    doc = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries}
    parsed = mf.parse(json.dumps(doc).encode(), mf.OCI_INDEX)
    assert isinstance(parsed, mf.Index)
    return parsed


def test_platform_choice_follows_variants() -> None:
    index = _index(
        ("linux", "arm", "v6"),
        ("linux", "arm64", ""),
        ("linux", "amd64", ""),
        ("linux", "arm", "v7"),
    )
    assert mf.choose_instance(index, mf.Platform("linux", "amd64")).digest.endswith("2")
    assert mf.choose_instance(index, mf.Platform("linux", "arm64", "v8")).digest.endswith("1")
    assert mf.choose_instance(index, mf.Platform("linux", "arm", "v7")).digest.endswith("3")
    assert mf.choose_instance(index, mf.Platform("linux", "arm", "v6")).digest.endswith("0")
    with pytest.raises(NotFoundError, match=r"s390x.*linux/arm/v6"):
        mf.choose_instance(index, mf.Platform("linux", "s390x"))


def test_served_type_must_match_declared() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_MANIFEST,
        "config": {"digest": D1, "size": 2},
        "layers": [],
    }
    with pytest.raises(mf.ManifestError, match="served as"):
        mf.parse(json.dumps(doc).encode(), mf.DOCKER_SCHEMA2)


@pytest.mark.parametrize("bad", [b"[]", b"{", b'{"schemaVersion": 3, "manifests": []}'])
def test_garbage_is_a_manifest_error(bad: bytes) -> None:
    with pytest.raises(mf.ManifestError):
        mf.parse(bad, mf.OCI_INDEX)


def test_bad_descriptor_names_the_field() -> None:
    doc = {
        "schemaVersion": 2,
        "config": {"digest": D1, "size": 2},
        "layers": [{"digest": "sha256:zz", "size": 1}],
    }
    with pytest.raises(mf.ManifestError, match=r"layers\[0\]"):
        mf.parse(json.dumps(doc).encode())


def test_oci_and_docker_conversion_round_trip() -> None:
    oci = mf.ImageManifest(
        mf.OCI_MANIFEST,
        mf.Descriptor(mf.OCI_CONFIG, D1, 10),
        (mf.Descriptor(mf.OCI_LAYER_GZIP, D2, 20), mf.Descriptor(mf.OCI_LAYER, D3, 30)),
    )
    docker = convert.to_media_type(oci, mf.DOCKER_SCHEMA2)
    assert [x.media_type for x in docker.layers] == [mf.DOCKER_LAYER_GZIP, mf.DOCKER_LAYER_TAR]
    assert convert.to_media_type(docker, mf.OCI_MANIFEST) == oci
    assert mf.parse(convert.render_manifest(docker)) == docker
    zstd = mf.ImageManifest(mf.OCI_MANIFEST, oci.config, (mf.Descriptor(mf.OCI_LAYER_ZSTD, D2, 1),))
    with pytest.raises(mf.ManifestError, match="zstd"):
        convert.to_media_type(zstd, mf.DOCKER_SCHEMA2)
