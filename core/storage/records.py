"""Layer, image and container records as containers/storage writes them.

Each record is a frozen dataclass read from and written to the JSON arrays
``overlay-layers/layers.json``, ``overlay-images/images.json`` and
``overlay-containers/containers.json``, with containers/storage's field
names (``diff-digest``, ``big-data-names`` ...). Keys crio does not know
(written by a newer podman, say) are kept in ``extra`` and written back
unchanged, so nothing another tool stored is lost.

Times are kept as the RFC 3339 strings Go writes; :func:`parse_time`
turns one into nanoseconds since the epoch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "COMPRESSION_GZIP",
    "COMPRESSION_NONE",
    "COMPRESSION_ZSTD",
    "Container",
    "Image",
    "Layer",
    "format_time",
    "from_json",
    "now",
    "parse_time",
    "to_json",
]

#: containers/storage ``archive.Compression`` values.
COMPRESSION_NONE = 0
COMPRESSION_GZIP = 2
COMPRESSION_ZSTD = 4

_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def format_time(ns: int) -> str:
    """Go's RFC3339Nano in UTC: fraction without trailing zeros."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


def now() -> str:
    return format_time(time.time_ns())


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time; 0 when empty or unreadable."""
    match = _TIME.match(text or "")
    if not match:
        return 0
    base, frac, zone = match.groups()
    stamp = dt.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return int(stamp.timestamp()) * 1_000_000_000 + int((frac or "").ljust(9, "0") or 0)


def _meta(key: str, omitempty: bool = True) -> dict[str, Any]:
    return {"json": key, "omitempty": omitempty}


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of ``layers.json``."""

    id: str = field(metadata=_meta("id", False))
    names: tuple[str, ...] = field(default=(), metadata=_meta("names"))
    parent: str = field(default="", metadata=_meta("parent"))
    metadata: str = field(default="", metadata=_meta("metadata"))
    mountlabel: str = field(default="", metadata=_meta("mountlabel"))
    created: str = field(default="", metadata=_meta("created"))
    compressed_digest: str = field(default="", metadata=_meta("compressed-diff-digest"))
    compressed_size: int = field(default=0, metadata=_meta("compressed-size"))
    diff_digest: str = field(default="", metadata=_meta("diff-digest"))
    diff_size: int = field(default=0, metadata=_meta("diff-size"))
    compression: int = field(default=0, metadata=_meta("compression"))
    uids: tuple[int, ...] = field(default=(), metadata=_meta("uidset"))
    gids: tuple[int, ...] = field(default=(), metadata=_meta("gidset"))
    flags: Mapping[str, Any] = field(default_factory=dict, metadata=_meta("flags"))
    big_data_names: tuple[str, ...] = field(default=(), metadata=_meta("big-data-names"))
    extra: Mapping[str, Any] = field(default_factory=dict, metadata={"extra": True})

    @property
    def incomplete(self) -> bool:
        """Set while a containers/storage tool applies the layer; left set if it died."""
        return self.flags.get("incomplete") is True


@dataclass(frozen=True, slots=True)
class Image:
    """One image of ``images.json``; ``id`` is the config digest's hex."""

    id: str = field(metadata=_meta("id", False))
    digest: str = field(default="", metadata=_meta("digest"))
    names: tuple[str, ...] = field(default=(), metadata=_meta("names"))
    names_history: tuple[str, ...] = field(default=(), metadata=_meta("names-history"))
    top_layer: str = field(default="", metadata=_meta("layer"))
    mapped_layers: tuple[str, ...] = field(default=(), metadata=_meta("mapped-layers"))
    metadata: str = field(default="", metadata=_meta("metadata"))
    big_data_names: tuple[str, ...] = field(default=(), metadata=_meta("big-data-names"))
    big_data_sizes: Mapping[str, int] = field(
        default_factory=dict, metadata=_meta("big-data-sizes")
    )
    big_data_digests: Mapping[str, str] = field(
        default_factory=dict, metadata=_meta("big-data-digests")
    )
    created: str = field(default="", metadata=_meta("created"))
    flags: Mapping[str, Any] = field(default_factory=dict, metadata=_meta("flags"))
    extra: Mapping[str, Any] = field(default_factory=dict, metadata={"extra": True})

    @property
    def digests(self) -> tuple[str, ...]:
        """Every manifest digest the image is known by, ``digest`` first."""
        found = [self.digest] if self.digest else []
        for key in self.big_data_names:
            if key.startswith("manifest-"):
                digest = key[len("manifest-") :]
                if digest not in found:
                    found.append(digest)
        return tuple(found)


@dataclass(frozen=True, slots=True)
class Container:
    """One container of ``containers.json``: an image plus a writable layer."""

    id: str = field(metadata=_meta("id", False))
    names: tuple[str, ...] = field(default=(), metadata=_meta("names"))
    image: str = field(default="", metadata=_meta("image"))
    layer: str = field(default="", metadata=_meta("layer"))
    metadata: str = field(default="", metadata=_meta("metadata"))
    big_data_names: tuple[str, ...] = field(default=(), metadata=_meta("big-data-names"))
    big_data_sizes: Mapping[str, int] = field(
        default_factory=dict, metadata=_meta("big-data-sizes")
    )
    big_data_digests: Mapping[str, str] = field(
        default_factory=dict, metadata=_meta("big-data-digests")
    )
    created: str = field(default="", metadata=_meta("created"))
    flags: Mapping[str, Any] = field(default_factory=dict, metadata=_meta("flags"))
    extra: Mapping[str, Any] = field(default_factory=dict, metadata={"extra": True})


R = TypeVar("R", Layer, Image, Container)


def from_json(cls: type[R], raw: Mapping[str, Any]) -> R:
    """Build a record from one JSON object; unknown keys go to ``extra``."""
    values: dict[str, Any] = {}
    known: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("extra"):
            continue
        key = f.metadata["json"]
        known.add(key)
        if key not in raw or raw[key] is None:
            continue
        value = raw[key]
        if isinstance(f.default, tuple):
            value = tuple(value)
        elif f.default_factory is dict:  # type: ignore[comparison-overlap]
            value = dict(value)
        values[f.name] = value
    values["extra"] = {k: v for k, v in raw.items() if k not in known}
    return cls(**values)


def to_json(record: Layer | Image | Container) -> dict[str, Any]:
    """The JSON object for a record, empty fields left out as Go's ``omitempty`` does."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.metadata.get("extra"):
            continue
        value = getattr(record, f.name)
        if f.metadata["omitempty"] and not value:
            continue
        out[f.metadata["json"]] = list(value) if isinstance(value, tuple) else value
    for key, value in record.extra.items():
        out.setdefault(key, value)
    return out
