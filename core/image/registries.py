"""``registries.conf``: where a name may be pulled from (containers-registries.conf(5)).

Version 2 (TOML)::

    unqualified-search-registries = ["registry.example.com", "docker.io"]

    [aliases]
    "busybox" = "docker.io/library/busybox"

    [[registry]]
    prefix = "example.com/foo"          # longest matching prefix wins; "*.example.com" too
    location = "internal.example.com/foo"
    insecure = false                    # plain HTTP or unverified TLS
    blocked = false
    mirror-by-digest-only = false

    [[registry.mirror]]                 # tried in order before the location
    location = "mirror.example.com/foo"
    insecure = false
    pull-from-mirror = "all"            # or "digest-only", "tag-only"

The version 1 tables ``[registries.search|insecure|block] registries = [...]``
are read as well. ``[crio.image] registries`` and ``insecure_registries``
add to what the file says (an insecure entry may be a CIDR such as ``10.0.0.0/8``).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crio.errors import ConfigError, InvalidRequestError, PermissionDeniedError
from crio.image.reference import DOCKER_HUB, Reference, normalize, parse

__all__ = [
    "DEFAULT_REGISTRIES_CONF",
    "BlockedError",
    "Endpoint",
    "PullSource",
    "Registries",
    "Registry",
    "load",
]

DEFAULT_REGISTRIES_CONF = "/etc/containers/registries.conf"
_PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")


class BlockedError(PermissionDeniedError):
    """registries.conf blocks the registry a reference names."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True, slots=True)
class Registry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class PullSource:
    """One place to try: the reference rewritten for it, and how to talk to it."""

    reference: Reference
    insecure: bool
    mirror: bool


def _host_of(location: str) -> str:
    return location.partition("/")[0]


def _prefix_length(name: str, prefix: str) -> int:
    """How much of ``name`` (a reference string) the prefix matches; 0 when it does not."""
    if prefix.startswith("*."):
        host = name.partition("/")[0].rsplit(":", 1)[0] if "/" in name else name
        return len(prefix) if host.endswith(prefix[1:]) else 0
    if name == prefix:
        return len(prefix)
    if name.startswith(prefix) and name[len(prefix)] in "/:@":
        return len(prefix)
    return 0


@dataclass(frozen=True, slots=True)
class Registries:
    """A parsed registries.conf plus crio's own additions."""

    registries: tuple[Registry, ...] = ()
    search: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    insecure_extra: tuple[str, ...] = ()
    source: str = ""

    def find(self, ref: Reference) -> Registry | None:
        """The ``[[registry]]`` table for a qualified reference (longest prefix), if any."""
        name = str(ref)
        best, best_len = None, 0
        for reg in self.registries:
            length = _prefix_length(name, reg.prefix)
            if length > best_len:
                best, best_len = reg, length
        return best

    def _insecure_extra(self, location: str) -> bool:
        host = _host_of(location)
        bare = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 or "]" in host else host
        for entry in self.insecure_extra:
            if entry in (host, location) or location.startswith(entry + "/"):
                return True
            if "/" in entry:
                try:
                    if ipaddress.ip_address(bare) in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
        return False

    def is_insecure(self, location: str) -> bool:
        """Whether ``host[:port][/path]`` may be reached over plain HTTP or unverified TLS."""
        if self._insecure_extra(location):
            return True
        best, best_len = None, 0
        for reg in self.registries:
            length = _prefix_length(location, reg.prefix)
            if length > best_len:
                best, best_len = reg, length
        return bool(best and best.insecure)

    def pull_sources(self, ref: Reference) -> list[PullSource]:
        """Mirrors (when allowed for this reference) then the location, in order.

        :raises BlockedError: the matching table is ``blocked``.
        """
        reg = self.find(ref)
        if reg is None:
            return [PullSource(ref, self._insecure_extra(ref.domain), False)]
        if reg.blocked:
            raise BlockedError(
                f"registry {reg.prefix} is blocked in {self.source or 'registries.conf'}"
            )
        name = str(ref)
        suffix = name[_prefix_length(name, reg.prefix) :]

        def rewrite(location: str) -> Reference:
            if reg.prefix.startswith("*."):
                return ref
            return normalize(parse(location + suffix))

        sources = []
        for mirror in reg.mirrors:
            policy = "digest-only" if reg.mirror_by_digest_only else mirror.pull_from_mirror
            if (policy == "digest-only" and not ref.digest) or (
                policy == "tag-only" and ref.digest
            ):
                continue
            insecure = mirror.insecure or self._insecure_extra(mirror.location)
            sources.append(PullSource(rewrite(mirror.location), insecure, True))
        location = reg.location or reg.prefix
        insecure = reg.insecure or self._insecure_extra(location)
        sources.append(PullSource(rewrite(location), insecure, False))
        return sources

    def candidates(self, ref: Reference) -> list[Reference]:
        """The qualified references a short name may mean: its alias, else each search registry.

        Docker Hub is searched when nothing else is configured.
        """
        if ref.qualified:
            return [normalize(ref)]
        alias = self.aliases.get(ref.path)
        if alias is not None:
            target = normalize(parse(alias))
            return [replace(target, tag=ref.tag or target.tag, digest=ref.digest)]
        registries = self.search or (DOCKER_HUB,)
        return [normalize(ref, registry) for registry in registries]


def _bad(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(message, file=source, key=key)


def _str_list(value: Any, source: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(source, key, "expected a list of strings")
    return tuple(value)


def _bool(table: Mapping[str, Any], name: str, source: str, key: str) -> bool:
    value = table.get(name, False)
    if not isinstance(value, bool):
        raise _bad(source, f"{key}.{name}", f"expected true or false, got {value!r}")
    return value


def _location(value: Any, source: str, key: str) -> str:
    if not isinstance(value, str):
        raise _bad(source, key, f"expected a string, got {value!r}")
    value = value.removeprefix("https://").removeprefix("http://").rstrip("/")
    if value:
        try:
            parse(value if "/" in value else value + "/x")
        except InvalidRequestError as exc:
            raise _bad(source, key, str(exc)) from None
    return value


def _registry(i: int, table: Any, source: str) -> Registry:
    key = f"registry[{i}]"
    if not isinstance(table, dict):
        raise _bad(source, key, "expected a table")
    known = {"prefix", "location", "insecure", "blocked", "mirror-by-digest-only", "mirror"}
    unknown = set(table) - known
    if unknown:
        raise _bad(
            source, f"{key}.{sorted(unknown)[0]}", f"unknown key; expected one of {sorted(known)}"
        )
    location = _location(table.get("location", ""), source, f"{key}.location")
    prefix = table.get("prefix", "") or location
    if not isinstance(prefix, str) or not prefix:
        raise _bad(source, key, "needs a prefix or a location")
    if prefix.startswith("*.") and location:
        raise _bad(source, f"{key}.location", "a wildcarded prefix cannot have a location")
    if not prefix.startswith("*."):
        prefix = _location(prefix, source, f"{key}.prefix")
    mirrors = []
    for j, mirror in enumerate(table.get("mirror", [])):
        mkey = f"{key}.mirror[{j}]"
        if not isinstance(mirror, dict) or "location" not in mirror:
            raise _bad(source, mkey, "needs a location")
        policy = mirror.get("pull-from-mirror", "all") or "all"
        if policy not in _PULL_FROM_MIRROR:
            raise _bad(source, f"{mkey}.pull-from-mirror", f"expected one of {_PULL_FROM_MIRROR}")
        mirrors.append(
            Endpoint(
                _location(mirror["location"], source, f"{mkey}.location"),
                _bool(mirror, "insecure", source, mkey),
                policy,
            )
        )
    return Registry(
        prefix=prefix,
        location=location,
        insecure=_bool(table, "insecure", source, key),
        blocked=_bool(table, "blocked", source, key),
        mirror_by_digest_only=_bool(table, "mirror-by-digest-only", source, key),
        mirrors=tuple(mirrors),
    )


def _from_v1(doc: Mapping[str, Any], source: str) -> tuple[list[Registry], tuple[str, ...]]:
    tables = doc["registries"]
    if not isinstance(tables, dict):
        raise _bad(source, "registries", "expected a table (version 1 format)")
    lists = {}
    for kind in ("search", "insecure", "block"):
        lists[kind] = _str_list(
            (tables.get(kind) or {}).get("registries", []), source, f"registries.{kind}"
        )
    regs = [Registry(prefix=h, location=h, insecure=True) for h in lists["insecure"]]
    regs += [Registry(prefix=h, location=h, blocked=True) for h in lists["block"]]
    return regs, lists["search"]


def parse_text(
    text: str,
    source: str = "registries.conf",
    extra_search: Sequence[str] = (),
    extra_insecure: Iterable[str] = (),
) -> Registries:
    """Parse registries.conf text; errors name the file and the key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=source) from None
    if "registries" in doc and "registry" in doc:
        raise _bad(
            source, "registries", "mixes version 1 [registries.*] and version 2 [[registry]]"
        )
    if "registries" in doc:
        regs, search = _from_v1(doc, source)
    else:
        regs = [_registry(i, t, source) for i, t in enumerate(doc.get("registry", []))]
        search = _str_list(
            doc.get("unqualified-search-registries", []), source, "unqualified-search-registries"
        )
    aliases = doc.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise _bad(source, "aliases", "expected a table of strings")
    prefixes = [r.prefix for r in regs]
    if len(set(prefixes)) != len(prefixes):
        dup = next(p for p in prefixes if prefixes.count(p) > 1)
        raise _bad(source, "registry", f"prefix {dup!r} is defined twice")
    search_all = tuple(dict.fromkeys([*extra_search, *search]))
    return Registries(tuple(regs), search_all, dict(aliases), tuple(extra_insecure), source)


def load(
    path: str | Path = "",
    extra_search: Sequence[str] = (),
    extra_insecure: Iterable[str] = (),
) -> Registries:
    """Read registries.conf; an absent default file means no rules, a missing named one fails."""
    file = Path(path or DEFAULT_REGISTRIES_CONF)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path:
            raise ConfigError("file does not exist", file=str(file)) from None
        text = ""
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(file)) from None
    return parse_text(text, str(file), extra_search, extra_insecure)
