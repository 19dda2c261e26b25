"""Signature lookaside stores configured in ``registries.d`` (containers-registries.d(5)).

Each ``*.yaml`` file may say::

    default-docker:
      lookaside: https://sigs.example.com          # "sigstore" is the old name
    docker:
      registry.example.com/team:
        lookaside: file:///var/lib/containers/sigstore
        lookaside-staging: file:///srv/sigstore    # where push --sign-by writes

The most specific namespace wins. Signature N (1-based) of the manifest
``sha256:HEX`` of ``host/ns/repo`` lives at
``BASE/ns/repo@sha256=HEX/signature-N``; readers stop at the first missing N.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crio.errors import ConfigError, CrioError, UnavailableError, UnsupportedError
from crio.image.reference import Reference

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_REGISTRIES_D",
    "Lookaside",
    "load",
    "read_signatures",
    "signature_url",
    "write_signatures",
]

DEFAULT_REGISTRIES_D = "/etc/containers/registries.d"
#: Readers stop after this many signatures of one manifest.
MAX_SIGNATURES = 64
#: No single signature is larger than this.
MAX_SIGNATURE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Namespace:
    lookaside: str = ""
    staging: str = ""


@dataclass(frozen=True, slots=True)
class Lookaside:
    default: _Namespace = field(default_factory=_Namespace)
    namespaces: Mapping[str, _Namespace] = field(default_factory=dict)

    def _find(self, ref: Reference) -> _Namespace:
        parts = ref.name.split("/")
        for n in range(len(parts), 0, -1):
            ns = self.namespaces.get("/".join(parts[:n]))
            if ns is not None:
                return ns
        return self.default

    def read_base(self, ref: Reference) -> str:
        return self._find(ref).lookaside

    def write_base(self, ref: Reference) -> str:
        ns = self._find(ref)
        return ns.staging or ns.lookaside


def _namespace(obj: Any, file: Path, key: str) -> _Namespace:
    if obj is None:
        return _Namespace()
    if not isinstance(obj, dict):
        raise ConfigError("expected a mapping", file=str(file), key=key)
    read = obj.get("lookaside") or obj.get("sigstore") or ""
    write = obj.get("lookaside-staging") or obj.get("sigstore-staging") or ""
    for name, value in (("lookaside", read), ("lookaside-staging", write)):
        if value and urllib.parse.urlsplit(str(value)).scheme not in ("file", "http", "https"):
            raise ConfigError(
                f"{value!r} is not a file://, http:// or https:// URL",
                file=str(file),
                key=f"{key}.{name}",
            )
    return _Namespace(str(read), str(write))


def load(directory: str | Path = "") -> Lookaside:
    """Read every ``*.yaml`` of the directory; a namespace defined twice is an error."""
    path = Path(directory or DEFAULT_REGISTRIES_D)
    default = _Namespace()
    default_file = None
    namespaces: dict[str, _Namespace] = {}
    if not path.is_dir():
        if directory:
            raise ConfigError("registries.d directory does not exist", file=str(path))
        return Lookaside()
    files = sorted(path.glob("*.yaml"))
    if files:
        import yaml  # only nodes with lookaside configs pay for the YAML parser
    for file in files:
        try:
            doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read: {exc}", file=str(file)) from None
        if not isinstance(doc, dict):
            raise ConfigError("expected a mapping", file=str(file))
        if "default-docker" in doc:
            if default_file is not None:
                raise ConfigError(f"default-docker is also set in {default_file}", file=str(file))
            default, default_file = _namespace(doc["default-docker"], file, "default-docker"), file
        for ns, obj in (doc.get("docker") or {}).items():
            if ns in namespaces:
                raise ConfigError(f"namespace {ns} is defined twice", file=str(file))
            namespaces[ns] = _namespace(obj, file, f"docker.{ns}")
    return Lookaside(default, namespaces)


def signature_url(base: str, ref: Reference, manifest_digest: str, index: int) -> str:
    """The URL of signature ``index`` (1-based)."""
    algorithm, _, hexpart = manifest_digest.partition(":")
    return f"{base.rstrip('/')}/{ref.path}@{algorithm}={hexpart}/signature-{index}"


def _read_file(url: str) -> bytes | None:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_SIGNATURE_BYTES:
        raise CrioError(f"signature {url} is larger than {MAX_SIGNATURE_BYTES} bytes")
    return data


async def _read_http(client: httpx.AsyncClient, url: str) -> bytes | None:
    import httpx

    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot read signature {url}: {exc}") from exc
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise UnavailableError(f"reading signature {url}: HTTP {response.status_code}")
    if len(response.content) > MAX_SIGNATURE_BYTES:
        raise CrioError(f"signature {url} is larger than {MAX_SIGNATURE_BYTES} bytes")
    return response.content


async def read_signatures(base: str, ref: Reference, manifest_digest: str) -> Sequence[bytes]:
    """Every signature of a manifest in the lookaside store at ``base`` (none when unset)."""
    if not base:
        return []
    scheme = urllib.parse.urlsplit(base).scheme
    out: list[bytes] = []
    client = None
    if scheme in ("http", "https"):
        import httpx  # the HTTP client is loaded by the first pull that needs it

        client = httpx.AsyncClient(timeout=30)
    try:
        for index in range(1, MAX_SIGNATURES + 1):
            url = signature_url(base, ref, manifest_digest, index)
            if client is not None:
                data = await _read_http(client, url)
            else:
                data = await asyncio.to_thread(_read_file, url)
            if data is None:
                break
            out.append(data)
    finally:
        if client is not None:
            await client.aclose()
    return out


def _write_files(base: str, ref: Reference, manifest_digest: str, sigs: Sequence[bytes]) -> None:
    first = 1
    while _read_file(signature_url(base, ref, manifest_digest, first)) is not None:
        first += 1
    for offset, sig in enumerate(sigs):
        url = signature_url(base, ref, manifest_digest, first + offset)
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sig-")
        with os.fdopen(fd, "wb") as f:
            f.write(sig)
        os.replace(tmp, path)


async def write_signatures(
    base: str, ref: Reference, manifest_digest: str, signatures: Sequence[bytes]
) -> None:
    """Add signatures after those already stored (file:// stores only, as containers/image)."""
    if not signatures:
        return
    if not base:
        raise UnsupportedError(
            f"no lookaside store (lookaside-staging) is configured for {ref.name} in registries.d"
        )
    if urllib.parse.urlsplit(base).scheme != "file":
        raise UnsupportedError(
            f"cannot write signatures to {base}: only file:// stores are writable"
        )
    await asyncio.to_thread(_write_files, base, ref, manifest_digest, signatures)
