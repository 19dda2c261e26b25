"""References: the distribution grammar and Docker Hub normalisation."""

from __future__ import annotations

import pytest

from crio.errors import InvalidRequestError
from crio.image.reference import Reference, is_image_id, normalize, parse, parse_normalized

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/user/app:v1", "docker.io/user/app:v1"),
        ("quay.io/ns/app", "quay.io/ns/app:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
        ("127.0.0.1:5000/app@" + D, "127.0.0.1:5000/app@" + D),
        ("reg.example.com/app:v1@" + D, "reg.example.com/app:v1@" + D),
        ("[::1]:5000/app", "[::1]:5000/app:latest"),
    ],
)
def test_normalised(text: str, expected: str) -> None:
    assert str(parse_normalized(text)) == expected


def test_short_name_stays_short_until_normalised() -> None:
    ref = parse("team/app:v1")
    assert not ref.qualified and ref.name == "team/app"
    assert str(normalize(ref, "registry.example.com")) == "registry.example.com/team/app:v1"
    assert normalize(ref).familiar() == "team/app:v1"
    assert parse_normalized("busybox").familiar() == "busybox:latest"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("busybox:", "tag"),
        ("busybox:-x", "tag"),
        ("a//b", "path component"),
        ("busybox@sha256:abc", "ALGORITHM:HEX|needs 64"),
        ("busybox@sha256:" + "A" * 64, "lowercase hex"),
        ("busybox@md5:" + "a" * 32, "unsupported algorithm"),
        (" busybox", "white space"),
        ("x" * 300, "longer than 255"),
    ],
)
def test_bad_references_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as info:
        parse(text)
    assert repr(text)[:20].strip("'") in str(info.value) or not text


def test_replacing_parts() -> None:
    ref = parse_normalized("busybox:1")
    assert str(ref.with_digest(D)) == f"docker.io/library/busybox@{D}"
    assert ref.repository() == Reference("docker.io", "library/busybox")


def test_image_ids() -> None:
    assert is_image_id("a" * 64) and is_image_id("sha256:" + "0" * 64)
    assert not is_image_id("a" * 63) and not is_image_id("busybox")
