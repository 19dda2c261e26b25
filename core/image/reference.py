"""Docker image references: parsing, normalisation and printing (sans-I/O).

The grammar is the one of distribution's ``reference`` package::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port]          (a dot or colon in it, or "localhost")
    path-comp  := [a-z0-9]+ ((\\.|_|__|-+) [a-z0-9]+)*
    tag        := [\\w][\\w.-]{0,127}
    digest     := algorithm ":" hex

A name without a domain is a *short name*; ``registries.conf`` decides which
registries it may mean (:mod:`crio.image.registries`). :func:`normalize`
applies Docker Hub's rules: ``busybox`` is ``docker.io/library/busybox``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from crio.errors import InvalidRequestError

__all__ = [
    "DOCKER_HUB",
    "Reference",
    "is_image_id",
    "normalize",
    "parse",
    "parse_normalized",
    "validate_digest",
]

DOCKER_HUB = "docker.io"
_LEGACY_HUB = "index.docker.io"
_OFFICIAL_NAMESPACE = "library"
_NAME_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_ALGORITHM = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"

_COMPONENT_RE = re.compile(_COMPONENT)
_DOMAIN_RE = re.compile(_DOMAIN)
_TAG_RE = re.compile(_TAG)
_DIGEST_RE = re.compile(rf"({_ALGORITHM}):([0-9a-fA-F]{{32,}})")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True, slots=True)
class Reference:
    """One parsed reference; ``domain`` is empty for a short name.

    ``str()`` gives the reference back in canonical form (after
    :func:`normalize`, fully qualified: ``docker.io/library/busybox:latest``).
    """

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def qualified(self) -> bool:
        return bool(self.domain)

    @property
    def name(self) -> str:
        """The repository: ``domain/path`` (just ``path`` for a short name)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest="")

    def with_digest(self, digest: str) -> Reference:
        return replace(self, tag="", digest=digest)

    def with_domain(self, domain: str) -> Reference:
        return normalize(replace(self, domain=domain))

    def repository(self) -> Reference:
        """The name alone, without tag or digest."""
        return replace(self, tag="", digest="")

    def familiar(self) -> str:
        """Docker's short spelling: ``busybox:latest`` for ``docker.io/library/busybox:latest``."""
        name = self.name
        if self.domain == DOCKER_HUB:
            name = self.path.removeprefix(f"{_OFFICIAL_NAMESPACE}/")
        return name + self._suffix()

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag else ""
        return suffix + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _bad(text: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"invalid image reference {text!r}: {why}")


def validate_digest(digest: str, what: str = "digest") -> str:
    """Check ``algorithm:hex``; sha256/sha384/sha512 must have their exact length in lowercase."""
    match = _DIGEST_RE.fullmatch(digest)
    if not match:
        raise InvalidRequestError(f"invalid {what} {digest!r}: expected ALGORITHM:HEX")
    algorithm, hexpart = match.groups()
    expected = _DIGEST_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidRequestError(f"invalid {what} {digest!r}: unsupported algorithm {algorithm}")
    if len(hexpart) != expected or hexpart != hexpart.lower():
        raise InvalidRequestError(
            f"invalid {what} {digest!r}: {algorithm} needs {expected} lowercase hex digits"
        )
    return digest


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return "", name


def parse(text: str) -> Reference:
    """Parse a reference as written; a short name stays short (``domain == ""``).

    :raises InvalidRequestError: naming the reference and what is wrong with it.
    """
    if not text:
        raise _bad(text, "it is empty")
    if text != text.strip():
        raise _bad(text, "it has surrounding white space")
    rest, _, digest = text.partition("@")
    if digest:
        try:
            validate_digest(digest)
        except InvalidRequestError as exc:
            raise _bad(text, str(exc)) from None
    name, tag = rest, ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise _bad(text, f"tag {tag!r} is not valid")
    if not name:
        raise _bad(text, "the name is empty")
    if len(name) > _NAME_MAX:
        raise _bad(text, f"the name is longer than {_NAME_MAX} characters")
    domain, path = _split_domain(name)
    if domain and not _DOMAIN_RE.fullmatch(domain):
        raise _bad(text, f"registry {domain!r} is not a valid host[:port]")
    if not path:
        raise _bad(text, "the repository path is empty")
    for component in path.split("/"):
        if not _COMPONENT_RE.fullmatch(component):
            if component.lower() != component:
                raise _bad(text, "repository names must be lowercase")
            raise _bad(text, f"path component {component!r} is not valid")
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def normalize(ref: Reference, default_domain: str = DOCKER_HUB) -> Reference:
    """Qualify a short name with ``default_domain`` and apply Docker Hub's rules."""
    domain = ref.domain or default_domain
    path = ref.path
    if domain == _LEGACY_HUB:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"{_OFFICIAL_NAMESPACE}/{path}"
    if (domain, path) == (ref.domain, ref.path):
        return ref
    return replace(ref, domain=domain, path=path)


def parse_normalized(text: str) -> Reference:
    """Parse and qualify with Docker Hub, adding ``latest`` when neither tag nor digest is given."""
    ref = normalize(parse(text))
    return ref if ref.tag or ref.digest else ref.with_tag("latest")


def is_image_id(text: str) -> bool:
    """Whether ``text`` is a full image id (64 hex, optionally ``sha256:``-prefixed)."""
    return bool(_HEX64.fullmatch(text.removeprefix("sha256:")))
