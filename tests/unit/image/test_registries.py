"""registries.conf v2 (and v1): prefixes, mirrors, insecure, blocked, short names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crio.errors import ConfigError
from crio.image import registries
from crio.image.reference import parse, parse_normalized

CONF = """
unqualified-search-registries = ["registry.example.com", "docker.io"]

[aliases]
"mine" = "registry.example.com/team/mine"

[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar"
insecure = true

[[registry.mirror]]
location = "mirror-a.example.com/foo"

[[registry.mirror]]
location = "mirror-b.example.com:5000/foo"
insecure = true
pull-from-mirror = "digest-only"

[[registry]]
prefix = "example.com"
blocked = true

[[registry]]
prefix = "*.wild.example.com"
insecure = true
"""


@pytest.fixture
def conf() -> registries.Registries:
    return registries.parse_text(
        CONF, "test.conf", extra_insecure=["10.1.0.0/16", "plain.example.com"]
    )


def test_longest_prefix_wins_and_location_is_rewritten(conf: registries.Registries) -> None:
    sources = conf.pull_sources(parse_normalized("example.com/foo/app:v1"))
    assert [(str(s.reference), s.insecure, s.mirror) for s in sources] == [
        ("mirror-a.example.com/foo/app:v1", False, True),
        ("internal.example.com/bar/app:v1", True, False),
    ]


def test_digest_only_mirror_is_used_for_digests(conf: registries.Registries) -> None:
    digest = "sha256:" + "b" * 64
    sources = conf.pull_sources(parse_normalized(f"example.com/foo/app@{digest}"))
    assert [str(s.reference) for s in sources] == [
        f"mirror-a.example.com/foo/app@{digest}",
        f"mirror-b.example.com:5000/foo/app@{digest}",
        f"internal.example.com/bar/app@{digest}",
    ]


def test_blocked_prefix(conf: registries.Registries) -> None:
    with pytest.raises(registries.BlockedError, match=r"example\.com is blocked in test\.conf"):
        conf.pull_sources(parse_normalized("example.com/other/app"))
    # A prefix must match whole path components.
    assert conf.find(parse_normalized("example.company/app")) is None


def test_wildcard_and_extra_insecure(conf: registries.Registries) -> None:
    assert conf.pull_sources(parse_normalized("a.wild.example.com/app"))[0].insecure
    assert conf.pull_sources(parse_normalized("10.1.2.3:5000/app"))[0].insecure
    assert conf.pull_sources(parse_normalized("plain.example.com/app"))[0].insecure
    assert not conf.pull_sources(parse_normalized("10.2.0.1:5000/app"))[0].insecure
    assert conf.is_insecure("internal.example.com/bar") is False
    assert conf.is_insecure("example.com/foo")


def test_short_names(conf: registries.Registries) -> None:
    assert [str(r) for r in conf.candidates(parse("app:v2"))] == [
        "registry.example.com/app:v2",
        "docker.io/library/app:v2",
    ]
    assert [str(r) for r in conf.candidates(parse("mine:v3"))] == [
        "registry.example.com/team/mine:v3"
    ]
    assert [str(r) for r in registries.Registries().candidates(parse("busybox"))] == [
        "docker.io/library/busybox"
    ]


def test_crio_search_list_comes_first() -> None:
    conf = registries.parse_text(CONF, extra_search=["first.example.com", "docker.io"])
    assert conf.search == ("first.example.com", "docker.io", "registry.example.com")


def test_v1_format() -> None:
    conf = registries.parse_text(
        '[registries.search]\nregistries = ["a.example.com"]\n'
        '[registries.insecure]\nregistries = ["b.example.com:5000"]\n'
        '[registries.block]\nregistries = ["c.example.com"]\n'
    )
    assert conf.search == ("a.example.com",)
    assert conf.pull_sources(parse_normalized("b.example.com:5000/x"))[0].insecure
    with pytest.raises(registries.BlockedError):
        conf.pull_sources(parse_normalized("c.example.com/x"))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[[registry]]\nprefix = 'a.example.com'\ninsecure = 'yes'\n", "registry[0].insecure"),
        ("[[registry]]\nlocation = 'a.example.com'\nmirrors = []\n", "registry[0].mirrors"),
        (
            "[[registry]]\nlocation = 'a.example.com'\n"
            "[[registry.mirror]]\nlocation = 'm.example.com'\n"
            "pull-from-mirror = 'sometimes'\n",
            "pull-from-mirror",
        ),
        ("unqualified-search-registries = 'docker.io'\n", "unqualified-search-registries"),
        (
            "[[registry]]\nprefix = 'a.example.com'\n[[registry]]\nprefix = 'a.example.com'\n",
            "registry",
        ),
        (
            "[[registry]]\nprefix = '*.example.com'\nlocation = 'x.example.com'\n",
            "registry[0].location",
        ),
    ],
)
def test_errors_name_file_and_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"bad.conf: .*{re.escape(key)}"):
        registries.parse_text(text, "bad.conf")


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        registries.load(tmp_path / "nope.conf")
