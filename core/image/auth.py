"""Registry credentials: auth files and ``WWW-Authenticate`` challenges (sans-I/O but file reads).

Auth files are containers-auth.json(5) / Docker ``config.json``::

    {"auths": {"registry.example.com": {"auth": "base64(user:password)"},
               "registry.example.com/team": {"identitytoken": "..."}}}

A key may name a host, a host plus a namespace, or be an old-style URL
(``https://index.docker.io/v1/``); the most specific key for a repository wins.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crio.errors import ConfigError, InvalidRequestError

__all__ = [
    "Challenge",
    "Credentials",
    "default_auth_files",
    "lookup",
    "parse_challenges",
    "parse_creds",
    "remove_credentials",
    "store_credentials",
]


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str = ""
    password: str = ""
    #: an OAuth2 refresh token (``identitytoken``) to trade for access tokens
    identity_token: str = ""
    #: a bearer token to send as it is
    registry_token: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.identity_token or self.registry_token)

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r}, ...)"


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (RFC 7235), which may hold several challenges."""
    challenges: list[Challenge] = []
    pos, n = 0, len(header)

    def skip(chars: str = " \t") -> None:
        nonlocal pos
        while pos < n and header[pos] in chars:
            pos += 1

    while pos < n:
        skip(" \t,")
        match = _TOKEN.match(header, pos)
        if not match:
            break
        scheme, pos = match.group(), match.end()
        challenge = Challenge(scheme.lower())
        challenges.append(challenge)
        while True:
            skip()
            save = pos
            match = _TOKEN.match(header, pos)
            if not match:
                break
            name, pos = match.group().lower(), match.end()
            skip()
            if pos >= n or header[pos] != "=":
                pos = save  # the next challenge's scheme
                break
            pos += 1
            skip()
            if pos < n and header[pos] == '"':
                pos += 1
                value = []
                while pos < n and header[pos] != '"':
                    if header[pos] == "\\" and pos + 1 < n:
                        pos += 1
                    value.append(header[pos])
                    pos += 1
                pos += 1
                challenge.params[name] = "".join(value)
            else:
                match = _TOKEN.match(header, pos)
                challenge.params[name] = match.group() if match else ""
                pos = match.end() if match else pos
            skip()
            if pos < n and header[pos] == ",":
                pos += 1
                continue
            break
    return challenges


def parse_creds(text: str) -> Credentials:
    """``USER[:PASSWORD]`` as kpod's ``--creds`` takes it."""
    if not text:
        raise InvalidRequestError("--creds: empty")
    user, _, password = text.partition(":")
    if not user:
        raise InvalidRequestError("--creds: the user name is empty")
    return Credentials(user, password)


def default_auth_files() -> list[str]:
    """Where kpod looks, in order: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    ~/.config/containers/auth.json, ~/.docker/config.json."""
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(os.environ["REGISTRY_AUTH_FILE"])
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    files.append(f"{runtime_dir}/containers/auth.json")
    home = Path.home()
    files += [str(home / ".config/containers/auth.json"), str(home / ".docker/config.json")]
    return files


def _normalize_key(key: str) -> str:
    key = key.removeprefix("https://").removeprefix("http://")
    if key.endswith("/v1/") or key.endswith("/v2/") or key.endswith("/v1") or key.endswith("/v2"):
        key = key.rsplit("/", 2)[0] if key.endswith("/") else key.rsplit("/", 1)[0]
    key = key.rstrip("/")
    if key in ("index.docker.io", "registry-1.docker.io"):
        return "docker.io"
    return key


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read auth file: {exc}", file=str(path)) from None
    if not isinstance(doc, dict):
        raise ConfigError("auth file is not a JSON object", file=str(path))
    return doc


def _entry_credentials(entry: Any, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    username, password = str(entry.get("username", "")), str(entry.get("password", ""))
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text
            raise ConfigError(
                f"auths.{key}.auth is not base64 of USER:PASSWORD", file=str(path)
            ) from None
        username, _, password = decoded.partition(":")
    token = str(entry.get("identitytoken", ""))
    if not (username or token):
        return None
    return Credentials(username, password, identity_token=token)


def lookup(repository: str, files: Iterable[str]) -> Credentials | None:
    """The credentials for ``host/path/repo`` from the first file that has any."""
    parts = repository.split("/")
    wanted = ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    for name in files:
        path = Path(name)
        auths = _read(path).get("auths") or {}
        if not isinstance(auths, dict):
            raise ConfigError("auths is not an object", file=str(path))
        normalized = {_normalize_key(k): (k, v) for k, v in auths.items()}
        for key in wanted:
            if key in normalized:
                original, entry = normalized[key]
                creds = _entry_credentials(entry, path, original)
                if creds:
                    return creds
    return None


def _write_atomic(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".auth-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out, indent="\t")
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def store_credentials(path: str, key: str, creds: Credentials) -> None:
    """Save ``creds`` under ``key`` (a host or host/namespace), keeping the file's other content."""
    file = Path(path)
    doc = _read(file)
    auths = doc.setdefault("auths", {})
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    entry: dict[str, str] = {"auth": token}
    if creds.identity_token:
        entry["identitytoken"] = creds.identity_token
    for existing in [k for k in auths if _normalize_key(k) == key]:
        del auths[existing]
    auths[key] = entry
    _write_atomic(file, doc)


def remove_credentials(path: str, key: str | None) -> Sequence[str]:
    """Forget ``key`` (None: every key); return the keys removed."""
    file = Path(path)
    doc = _read(file)
    auths = doc.get("auths") or {}
    removed = [k for k in auths if key is None or _normalize_key(k) == key]
    for k in removed:
        del auths[k]
    if removed:
        _write_atomic(file, doc)
    return removed
