"""Image manifests in every format a registry serves (sans-I/O).

* OCI image index and manifest (image-spec v1),
* Docker manifest list and image manifest schema 2,
* Docker schema 1, signed (``prettyjws``) or not: no config blob, layers
  listed top first, history as ``v1Compatibility`` strings.

A signed schema 1 manifest's digest is taken over its payload without the
signatures (distribution's "canonical" bytes), which is what registries
answer in ``Docker-Content-Digest`` and what ``NAME@DIGEST`` names.
"""

from __future__ import annotations

import base64
import json
import platform as _platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crio.errors import CrioError, NotFoundError
from crio.image.digest import digest_of
from crio.image.reference import validate_digest

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_TAR",
    "DOCKER_LIST",
    "DOCKER_SCHEMA1",
    "DOCKER_SCHEMA1_SIGNED",
    "DOCKER_SCHEMA2",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "Descriptor",
    "ImageManifest",
    "Index",
    "ManifestError",
    "Platform",
    "Schema1Manifest",
    "choose_instance",
    "guess_media_type",
    "host_platform",
    "manifest_digest",
    "parse",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_SCHEMA2})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

#: The Accept header of a manifest request, preferred first. The OCI types
#: must be listed: a registry answers 404 to an OCI manifest otherwise.
MANIFEST_ACCEPT = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_LIST,
    DOCKER_SCHEMA2,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
)

#: gzip of an empty tar: schema 1 "throwaway" layers point at it.
EMPTY_LAYER_GZIP = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"


class ManifestError(CrioError):
    """A manifest is malformed or of a kind crio cannot use."""


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            plat: dict[str, str] = {
                "architecture": self.platform.architecture,
                "os": self.platform.os,
            }
            if self.platform.variant:
                plat["variant"] = self.platform.variant
            if self.platform.os_version:
                plat["os.version"] = self.platform.os_version
            out["platform"] = plat
        return out


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """An OCI image manifest or a Docker schema 2 manifest."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Index:
    """An OCI image index or a Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Schema1Manifest:
    """Docker schema 1: ``layers`` base first (the file lists them top first)."""

    media_type: str
    name: str
    tag: str
    architecture: str
    layers: tuple[Descriptor, ...]
    #: ``v1Compatibility`` objects in the same order as ``layers`` (base first).
    history: tuple[Mapping[str, Any], ...]
    #: Whether each layer is a "throwaway" (empty) one that adds nothing.
    throwaway: tuple[bool, ...]


Manifest = ImageManifest | Index | Schema1Manifest


def _load(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest is not a JSON object")
    return doc


def guess_media_type(data: bytes) -> str:
    """The media type of a manifest from its content (registries may answer text/plain)."""
    doc = _load(data)
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    raise ManifestError("cannot tell what kind of manifest this is")


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def schema1_payload(data: bytes) -> bytes:
    """The signed payload of a ``prettyjws`` manifest: the bytes its signatures cover."""
    doc = _load(data)
    signatures = doc.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        return data
    payloads = set()
    for sig in signatures:
        try:
            protected = json.loads(_b64url(sig["protected"]))
            length = int(protected["formatLength"])
            tail = _b64url(protected["formatTail"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"schema 1 signature header is malformed: {exc}") from None
        if not 0 < length <= len(data):
            raise ManifestError("schema 1 signature formatLength is out of range")
        payloads.add(data[:length] + tail)
    if len(payloads) != 1:
        raise ManifestError("schema 1 signatures disagree about the payload")
    payload = payloads.pop()
    _load(payload)
    return payload


def manifest_digest(data: bytes, media_type: str = "", algorithm: str = "sha256") -> str:
    """The digest that names this manifest (a signed schema 1 one: of its payload)."""
    kind = media_type or guess_media_type(data)
    if kind in SCHEMA1_TYPES or (not media_type and b'"signatures"' in data):
        try:
            return digest_of(schema1_payload(data), algorithm)
        except ManifestError:
            if kind in SCHEMA1_TYPES:
                raise
    return digest_of(data, algorithm)


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: not an object")
    try:
        digest = validate_digest(str(obj["digest"]), f"{where}.digest")
        size = int(obj["size"])
        media_type = str(obj.get("mediaType", ""))
    except (KeyError, TypeError, ValueError, CrioError) as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if size < 0:
        raise ManifestError(f"{where}.size: negative")
    plat = obj.get("platform")
    platform = None
    if isinstance(plat, dict):
        platform = Platform(
            os=str(plat.get("os", "")),
            architecture=str(plat.get("architecture", "")),
            variant=str(plat.get("variant", "")),
            os_version=str(plat.get("os.version", "")),
        )
    urls = tuple(str(u) for u in obj.get("urls") or ())
    annotations = {str(k): str(v) for k, v in (obj.get("annotations") or {}).items()}
    return Descriptor(media_type, digest, size, platform, urls, annotations)


def _parse_schema1(doc: dict[str, Any], media_type: str) -> Schema1Manifest:
    fs_layers = doc.get("fsLayers")
    history = doc.get("history")
    if not isinstance(fs_layers, list) or not isinstance(history, list) or not fs_layers:
        raise ManifestError("schema 1 manifest needs fsLayers and history")
    if len(fs_layers) != len(history):
        raise ManifestError("schema 1 manifest: fsLayers and history differ in length")
    layers, compat, throwaway = [], [], []
    for i in reversed(range(len(fs_layers))):
        try:
            digest = validate_digest(str(fs_layers[i]["blobSum"]), f"fsLayers[{i}].blobSum")
            v1 = json.loads(history[i]["v1Compatibility"])
        except (KeyError, TypeError, ValueError, CrioError) as exc:
            raise ManifestError(f"schema 1 manifest, layer {i}: {exc}") from None
        layers.append(Descriptor(DOCKER_LAYER_GZIP, digest, -1))
        compat.append(v1)
        throwaway.append(bool(v1.get("throwaway")))
    return Schema1Manifest(
        media_type=media_type,
        name=str(doc.get("name", "")),
        tag=str(doc.get("tag", "")),
        architecture=str(doc.get("architecture", "")),
        layers=tuple(layers),
        history=tuple(compat),
        throwaway=tuple(throwaway),
    )


def parse(data: bytes, media_type: str = "") -> Manifest:
    """Parse a manifest; ``media_type`` is the one the server declared, if any.

    :raises ManifestError: naming the field that is wrong.
    """
    doc = _load(data)
    declared = doc.get("mediaType")
    kind = media_type if media_type and media_type != "application/json" else ""
    kind = kind or guess_media_type(data)
    known = IMAGE_TYPES | INDEX_TYPES
    if isinstance(declared, str) and declared and kind in known and declared != kind:
        raise ManifestError(f"manifest says mediaType {declared!r} but was served as {kind!r}")
    if kind in SCHEMA1_TYPES:
        return _parse_schema1(doc, kind)
    if doc.get("schemaVersion") != 2:
        raise ManifestError(f"schemaVersion {doc.get('schemaVersion')!r} is not supported")
    if kind in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("index.manifests: not a list")
        return Index(kind, tuple(_descriptor(m, f"manifests[{i}]") for i, m in enumerate(entries)))
    if kind in IMAGE_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("manifest.layers: not a list")
        return ImageManifest(
            media_type=kind,
            config=_descriptor(doc.get("config"), "config"),
            layers=tuple(_descriptor(x, f"layers[{i}]") for i, x in enumerate(layers)),
            annotations={str(k): str(v) for k, v in (doc.get("annotations") or {}).items()},
        )
    raise ManifestError(f"manifest media type {kind!r} is not supported")


# ---------------------------------------------------------------------------
# Platforms


_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386"}
_VARIANT = {"aarch64": "v8", "armv7l": "v7", "armv6l": "v6"}


def host_platform() -> Platform:
    machine = _platform.machine()
    return Platform("linux", _ARCH.get(machine, machine), _VARIANT.get(machine, ""))


def _compatible_variants(arch: str, variant: str) -> list[str]:
    if arch == "arm64":
        return [variant, "v8", ""] if variant not in ("", "v8") else ["v8", ""]
    if arch == "arm":
        order = ["v8", "v7", "v6", "v5"]
        start = order.index(variant) if variant in order else 1
        return [*order[start:], ""]
    return [variant, ""] if variant else [""]


def choose_instance(index: Index, wanted: Platform) -> Descriptor:
    """The entry of ``index`` for ``wanted`` (variants matched as containers/image does).

    :raises NotFoundError: naming the platform and what the index offers.
    """
    variants = _compatible_variants(wanted.architecture, wanted.variant)
    best: tuple[int, Descriptor] | None = None
    for entry in index.manifests:
        plat = entry.platform
        if plat is None or plat.os != wanted.os or plat.architecture != wanted.architecture:
            continue
        if plat.variant not in variants:
            continue
        rank = variants.index(plat.variant)
        if best is None or rank < best[0]:
            best = (rank, entry)
    if best is None:
        offered = ", ".join(str(e.platform) for e in index.manifests if e.platform) or "none"
        raise NotFoundError(f"no image for platform {wanted} in the index (it has: {offered})")
    return best[1]


def layer_descriptors(manifest: ImageManifest | Schema1Manifest) -> Sequence[Descriptor]:
    """The layers that carry content, base first (schema 1 throwaway layers dropped)."""
    if isinstance(manifest, Schema1Manifest):
        return tuple(
            layer
            for layer, empty in zip(manifest.layers, manifest.throwaway, strict=True)
            if not empty
        )
    return manifest.layers
