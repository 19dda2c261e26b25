"""policy.json with real GPG signatures (Debian's gpg through python-gnupg)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from crio.errors import ConfigError
from crio.image import lookaside, policy, signature
from crio.image.reference import parse_normalized
from support.gpg import GpgKey, gpg_key

DIGEST = "sha256:" + "d" * 64
OTHER = "sha256:" + "e" * 64


@pytest.fixture(scope="module")
def key() -> Iterator[GpgKey]:
    with gpg_key("good@crio.test") as k:
        yield k


@pytest.fixture(scope="module")
def wrong_key() -> Iterator[GpgKey]:
    with gpg_key("wrong@crio.test") as k:
        yield k


def signed(k: GpgKey, digest: str, ref: str) -> bytes:
    payload = signature.render_payload(digest, parse_normalized(ref))
    return signature.sign(payload, k.fingerprint, str(k.home))


def check(pol: policy.Policy, ref: str, sigs: Sequence[bytes], digest: str = DIGEST) -> None:
    async def fetch() -> Sequence[bytes]:
        return sigs

    image = policy.PolicyImage("docker", parse_normalized(ref), digest, fetch)
    asyncio.run(pol.check(image, str(parse_normalized(ref))))


def signed_by(
    k: GpgKey, identity: dict | None = None, scope: str = "reg.example.com"
) -> policy.Policy:
    req = {"type": "signedBy", "keyType": "GPGKeys", "keyData": base64.b64encode(k.public).decode()}
    if identity:
        req["signedIdentity"] = identity
    doc = {"default": [{"type": "reject"}], "transports": {"docker": {scope: [req]}}}
    return policy.parse_policy(json.dumps(doc))


def test_accept_and_reject_scopes() -> None:
    doc = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {
            "docker": {
                "reg.example.com/team": [{"type": "reject"}],
                "*.example.com": [{"type": "reject"}],
            }
        },
    }
    pol = policy.parse_policy(json.dumps(doc), "p.json")
    check(pol, "reg.example.org/other/app:v1", [])  # no scope matches: the default
    with pytest.raises(policy.PolicyRejectedError, match=r"'\*.example.com'"):
        check(pol, "reg.example.com/other/app:v1", [])  # the wildcarded domain
    with pytest.raises(
        policy.PolicyRejectedError,
        match=r"p.json \(transports.docker.'reg.example.com/team'\).*reject",
    ):
        check(pol, "reg.example.com/team/app:v1", [])
    check(pol, "docker.io/library/busybox:latest", [])


def test_signed_by_good_signature(key: GpgKey) -> None:
    ref = "reg.example.com/team/app:v1"
    check(signed_by(key), ref, [signed(key, DIGEST, ref)])


def test_signed_by_wrong_key_is_rejected(key: GpgKey, wrong_key: GpgKey) -> None:
    ref = "reg.example.com/team/app:v1"
    with pytest.raises(policy.PolicyRejectedError, match="not trusted"):
        check(signed_by(key), ref, [signed(wrong_key, DIGEST, ref)])


def test_signature_for_another_manifest_is_rejected(key: GpgKey) -> None:
    ref = "reg.example.com/team/app:v1"
    with pytest.raises(policy.PolicyRejectedError, match=f"for manifest {OTHER}"):
        check(signed_by(key), ref, [signed(key, OTHER, ref)])


def test_tampered_signature_and_no_signature(key: GpgKey) -> None:
    ref = "reg.example.com/team/app:v1"
    blob = bytearray(signed(key, DIGEST, ref))
    blob[len(blob) // 3] ^= 0x55
    with pytest.raises(policy.PolicyRejectedError, match="signature 1: invalid signature"):
        check(signed_by(key), ref, [bytes(blob)])
    with pytest.raises(policy.PolicyRejectedError, match="no signature exists"):
        check(signed_by(key), ref, [])


def test_one_good_signature_among_bad_ones_is_enough(key: GpgKey, wrong_key: GpgKey) -> None:
    ref = "reg.example.com/team/app:v1"
    check(signed_by(key), ref, [signed(wrong_key, DIGEST, ref), signed(key, DIGEST, ref)])


@pytest.mark.parametrize(
    ("identity", "image", "signed_ref", "ok"),
    [
        (None, "reg.example.com/a:v1", "reg.example.com/a:v1", True),
        (None, "reg.example.com/a:v1", "reg.example.com/a:v2", False),
        (None, f"reg.example.com/a@{DIGEST}", "reg.example.com/a:anything", True),
        (None, f"reg.example.com/a@{DIGEST}", "reg.example.com/b:v1", False),
        ({"type": "matchExact"}, f"reg.example.com/a@{DIGEST}", "reg.example.com/a:v1", False),
        ({"type": "matchExact"}, "reg.example.com/a:v1", "reg.example.com/a:v1", True),
        ({"type": "matchRepository"}, "reg.example.com/a:v1", "reg.example.com/a:v9", True),
        ({"type": "matchRepository"}, "reg.example.com/a:v1", "reg.example.com/b:v1", False),
        (
            {"type": "exactReference", "dockerReference": "other.example.com/x:prod"},
            "reg.example.com/a:v1",
            "other.example.com/x:prod",
            True,
        ),
        (
            {"type": "exactReference", "dockerReference": "other.example.com/x:prod"},
            "reg.example.com/a:v1",
            "reg.example.com/a:v1",
            False,
        ),
        (
            {"type": "exactRepository", "dockerRepository": "other.example.com/x"},
            "reg.example.com/a:v1",
            "other.example.com/x:whatever",
            True,
        ),
        (
            {
                "type": "remapIdentity",
                "prefix": "reg.example.com",
                "signedPrefix": "upstream.example.com/mirror",
            },
            "reg.example.com/a:v1",
            "upstream.example.com/mirror/a:v1",
            True,
        ),
        (
            {
                "type": "remapIdentity",
                "prefix": "reg.example.com",
                "signedPrefix": "upstream.example.com/mirror",
            },
            "reg.example.com/a:v1",
            "reg.example.com/a:v1",
            False,
        ),
    ],
)
def test_signed_identity_kinds(
    key: GpgKey, identity: dict | None, image: str, signed_ref: str, ok: bool
) -> None:
    pol = signed_by(key, identity)
    sig = signed(key, DIGEST, signed_ref)
    if ok:
        check(pol, image, [sig])
    else:
        with pytest.raises(policy.PolicyRejectedError, match="does not match"):
            check(pol, image, [sig])


def test_key_path_relative_to_the_policy_file(tmp_path: Path, key: GpgKey) -> None:
    key.write_public(tmp_path / "key.gpg")
    (tmp_path / "policy.json").write_text(
        json.dumps(
            {
                "default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "key.gpg"}],
            }
        )
    )
    pol = policy.load(tmp_path / "policy.json")
    ref = "reg.example.com/a:v1"
    check(pol, ref, [signed(key, DIGEST, ref)])


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({}, "default: is missing"),
        ({"default": []}, "default: expected a non-empty list"),
        ({"default": [{"type": "maybe"}]}, r"default\[0\].type: unknown requirement type 'maybe'"),
        ({"default": [{"type": "sigstoreSigned"}]}, "not supported"),
        ({"default": [{"type": "signedBy", "keyType": "X509"}]}, "keyType"),
        (
            {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/nonexistent"}]},
            "cannot read",
        ),
        (
            {
                "default": [
                    {
                        "type": "signedBy",
                        "keyType": "GPGKeys",
                        "keyData": "AA==",
                        "signedIdentity": {"type": "exactReference"},
                    }
                ]
            },
            "needs dockerReference",
        ),
        ({"default": [{"type": "reject"}], "extra": 1}, "extra: unknown key"),
    ],
)
def test_bad_policies_name_the_key(doc: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        policy.parse_policy(json.dumps(doc), "p.json")


def test_payload_parsing_is_strict() -> None:
    good = json.loads(signature.render_payload(DIGEST, parse_normalized("a.example.com/b:c")))
    assert signature.parse_payload(json.dumps(good).encode()).manifest_digest == DIGEST
    for mutate in (
        lambda d: d["critical"].update(extra=1),
        lambda d: d["critical"].update(type="other"),
        lambda d: d["critical"]["image"].update({"docker-manifest-digest": "sha256:short"}),
        lambda d: d.update(more=1),
    ):
        doc = json.loads(json.dumps(good))
        mutate(doc)
        with pytest.raises(signature.SignatureError):
            signature.parse_payload(json.dumps(doc).encode())


def test_lookaside_file_store_round_trip(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "default.yaml").write_text(
        f"docker:\n  reg.example.com/team:\n    lookaside: file://{tmp_path}/sigs\n"
        f"default-docker:\n  sigstore: file://{tmp_path}/default\n"
    )
    store = lookaside.load(tmp_path / "d")
    ref = parse_normalized("reg.example.com/team/app:v1")
    base = store.read_base(ref)
    assert base == f"file://{tmp_path}/sigs"
    assert store.read_base(parse_normalized("other.example.com/x")) == f"file://{tmp_path}/default"
    asyncio.run(lookaside.write_signatures(store.write_base(ref), ref, DIGEST, [b"one", b"two"]))
    asyncio.run(lookaside.write_signatures(store.write_base(ref), ref, DIGEST, [b"three"]))
    assert (
        tmp_path / "sigs" / f"team/app@sha256={'d' * 64}" / "signature-3"
    ).read_bytes() == b"three"
    assert asyncio.run(lookaside.read_signatures(base, ref, DIGEST)) == [b"one", b"two", b"three"]
    assert asyncio.run(lookaside.read_signatures(base, ref, OTHER)) == []


def test_lookaside_config_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("default-docker:\n  lookaside: ftp://x\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: default-docker\.lookaside"):
        lookaside.load(tmp_path)
