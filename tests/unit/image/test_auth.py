"""Auth files and WWW-Authenticate challenges."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from crio.errors import ConfigError, InvalidRequestError
from crio.image import auth


def test_bearer_challenge_with_quoted_commas() -> None:
    [c] = auth.parse_challenges(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/app:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:team/app:pull,push",
    }


def test_several_challenges_and_escapes() -> None:
    challenges = auth.parse_challenges(
        'Basic realm="a \\"b\\"", Bearer realm=x, error=invalid_token'
    )
    assert [(c.scheme, c.params) for c in challenges] == [
        ("basic", {"realm": 'a "b"'}),
        ("bearer", {"realm": "x", "error": "invalid_token"}),
    ]
    assert auth.parse_challenges("") == []


def _write(path: Path, auths: dict) -> str:
    path.write_text(json.dumps({"auths": auths}))
    return str(path)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_most_specific_key_wins_and_files_in_order(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.json", {"reg.example.com/team": {"auth": _b64("team:pw1")}})
    second = _write(
        tmp_path / "b.json",
        {
            "https://reg.example.com/v1/": {"auth": _b64("host:pw2")},
            "https://index.docker.io/v1/": {"auth": _b64("hub:pw3")},
        },
    )
    files = [first, second, str(tmp_path / "absent.json")]
    assert auth.lookup("reg.example.com/team/app", files) == auth.Credentials("team", "pw1")
    assert auth.lookup("reg.example.com/other/app", files) == auth.Credentials("host", "pw2")
    assert auth.lookup("docker.io/library/busybox", files) == auth.Credentials("hub", "pw3")
    assert auth.lookup("quay.io/x/y", files) is None


def test_store_and_remove_keep_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "containers" / "auth.json"
    path.parent.mkdir()
    path.write_text(
        json.dumps({"auths": {"other.example.com": {"auth": _b64("o:p")}}, "credHelpers": {}})
    )
    auth.store_credentials(
        str(path), "reg.example.com", auth.Credentials("me", "secret:with:colons")
    )
    assert path.stat().st_mode & 0o777 == 0o600
    assert auth.lookup("reg.example.com/x", [str(path)]) == auth.Credentials(
        "me", "secret:with:colons"
    )
    assert auth.remove_credentials(str(path), "reg.example.com") == ["reg.example.com"]
    doc = json.loads(path.read_text())
    assert list(doc["auths"]) == ["other.example.com"] and "credHelpers" in doc
    assert auth.remove_credentials(str(path), None) == ["other.example.com"]


def test_bad_files_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        auth.lookup("x.example.com/a", [str(bad)])
    bad.write_text(json.dumps({"auths": {"x.example.com": {"auth": "%%%"}}}))
    with pytest.raises(ConfigError, match=r"auths.x.example.com.auth"):
        auth.lookup("x.example.com/a", [str(bad)])


def test_creds_flag() -> None:
    assert auth.parse_creds("u:p:q") == auth.Credentials("u", "p:q")
    with pytest.raises(InvalidRequestError, match="--creds"):
        auth.parse_creds(":p")
    assert "secret" not in repr(auth.Credentials("u", "secret"))
