"""Writing manifests and converting between formats (sans-I/O).

Conversions change the manifest's bytes and so its digest; signatures of the
original do not carry over (the copy engine drops them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from crio.image import manifest as m

__all__ = [
    "render_index",
    "render_manifest",
    "schema1_to_config",
    "to_media_type",
]

_OCI_TO_DOCKER = {
    m.OCI_CONFIG: m.DOCKER_CONFIG,
    m.OCI_LAYER_GZIP: m.DOCKER_LAYER_GZIP,
    m.OCI_LAYER: m.DOCKER_LAYER_TAR,
    m.OCI_LAYER_ND_GZIP: m.DOCKER_FOREIGN_LAYER,
}
_DOCKER_TO_OCI = {docker: oci for oci, docker in _OCI_TO_DOCKER.items()}


def render_manifest(manifest: m.ImageManifest) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifest.media_type,
        "config": manifest.config.to_json(),
        "layers": [layer.to_json() for layer in manifest.layers],
    }
    if manifest.annotations:
        doc["annotations"] = dict(manifest.annotations)
    return json.dumps(doc, indent=3).encode()


def render_index(media_type: str, entries: Sequence[m.Descriptor]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [entry.to_json() for entry in entries],
    }
    return json.dumps(doc, indent=3).encode()


def _retype(desc: m.Descriptor, table: Mapping[str, str], target: str) -> m.Descriptor:
    new = table.get(desc.media_type)
    if new is None:
        if desc.media_type in table.values():
            return desc
        raise m.ManifestError(
            f"blob {desc.digest} of type {desc.media_type!r} cannot be written as {target}"
        )
    return m.Descriptor(new, desc.digest, desc.size, desc.platform, desc.urls, desc.annotations)


def to_media_type(manifest: m.ImageManifest, target: str) -> m.ImageManifest:
    """The same image described as ``target`` (OCI manifest or Docker schema 2)."""
    if manifest.media_type == target:
        return manifest
    if target == m.DOCKER_SCHEMA2:
        table = _OCI_TO_DOCKER
    elif target == m.OCI_MANIFEST:
        table = _DOCKER_TO_OCI
    else:
        raise m.ManifestError(f"cannot convert a manifest to {target!r}")
    return m.ImageManifest(
        media_type=target,
        config=_retype(manifest.config, table, target),
        layers=tuple(_retype(layer, table, target) for layer in manifest.layers),
        annotations=manifest.annotations if target == m.OCI_MANIFEST else {},
    )


def schema1_to_config(manifest: m.Schema1Manifest, diff_ids: Sequence[str]) -> bytes:
    """The schema 2 config a schema 1 image would have had, as containers/image builds it.

    :param diff_ids: the uncompressed digests of the non-throwaway layers, base first.
    """
    top = dict(manifest.history[-1])
    for key in ("id", "parent", "parent_id", "layer_id", "throwaway", "Size"):
        top.pop(key, None)
    history = []
    for compat in manifest.history:
        cmd = (compat.get("container_config") or {}).get("Cmd") or []
        item: dict[str, Any] = {"created": compat.get("created", "")}
        if cmd:
            item["created_by"] = " ".join(cmd)
        for key in ("author", "comment"):
            if compat.get(key):
                item[key] = compat[key]
        if compat.get("throwaway"):
            item["empty_layer"] = True
        history.append(item)
    top["history"] = history
    top["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    top.setdefault("architecture", manifest.architecture)
    top.setdefault("os", "linux")
    return json.dumps(top, separators=(",", ":"), sort_keys=True).encode()
