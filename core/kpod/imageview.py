"""How kpod names, finds and shows images (Docker CLI field names)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from crio.errors import NotFoundError
from crio.kpod.common import UsageError, human_ago, human_size
from crio.storage import Image, Layer, Store
from crio.storage.records import parse_time

__all__ = [
    "image_config",
    "image_rows",
    "inspect_image",
    "normalize_name",
    "resolve_image",
    "split_name",
]


def split_name(name: str) -> tuple[str, str, str]:
    """``repo:tag`` or ``repo@digest`` into (repository, tag, digest); missing parts "<none>"."""
    if "@" in name:
        repo, _, digest = name.partition("@")
        return repo, "<none>", digest
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], ""
    return name, "<none>", ""


def normalize_name(name: str) -> str:
    """A full name for a new tag: ``:latest`` when untagged, ``localhost/`` when no registry.

    :raises UsageError: an empty or malformed name.
    """
    if not name or name != name.strip() or any(c.isspace() for c in name):
        raise UsageError(f"invalid image name {name!r}")
    repo, tag, digest = split_name(name)
    if repo != repo.lower():
        raise UsageError(f"invalid image name {name!r}: repository names must be lowercase")
    first = repo.split("/", 1)[0]
    if "/" not in repo or not ("." in first or ":" in first or first == "localhost"):
        repo = f"localhost/{repo}"
    if digest:
        return f"{repo}@{digest}"
    return f"{repo}:{tag if tag != '<none>' else 'latest'}"


def _candidates(ref: str) -> list[str]:
    found = [ref]
    _, tag, digest = split_name(ref)
    if tag == "<none>" and not digest:
        found.append(f"{ref}:latest")
    first = ref.split("/", 1)[0]
    if "/" not in ref or not ("." in first or ":" in first or first == "localhost"):
        base = list(found)
        for prefix in ("localhost/", "docker.io/library/", "docker.io/"):
            found += [prefix + b for b in base]
    return found


async def resolve_image(store: Store, ref: str) -> tuple[Image, str]:
    """The image ``ref`` names, and the exact name matched ("" when matched by id or digest).

    Short names are tried as ``NAME:latest`` and under ``localhost/`` and ``docker.io``.
    :raises NotFoundError: with Docker's "No such image" wording.
    """
    images = await store.images()
    for candidate in _candidates(ref):
        for image in images:
            if candidate in image.names:
                return image, candidate
    try:
        return await store.image(ref), ""
    except NotFoundError:
        raise NotFoundError(f"No such image: {ref}") from None


def image_config(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _size(image: Image, layers: Mapping[str, Layer]) -> int:
    total, current = 0, image.top_layer
    while current and current in layers:
        total += layers[current].diff_size
        current = layers[current].parent
    return total


def _created_at(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(ns / 1e9)) if ns else ""


def image_rows(
    images: Sequence[Image],
    layers: Sequence[Layer],
    no_trunc: bool = False,
    stores: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per image name (one "<none>" row for an image without names).

    :param stores: image id -> the root of the read-only image store it lives
        in; images not named there are in the node's own store.
    """
    by_id = {layer.id: layer for layer in layers}
    rows = []
    for image in images:
        created = parse_time(image.created)
        size = _size(image, by_id)
        names = [n for n in image.names if "@" not in n] or [""]
        for name in names:
            repo, tag, _ = split_name(name) if name else ("<none>", "<none>", "")
            rows.append(
                {
                    "ID": ("sha256:" + image.id) if no_trunc else image.id[:12],
                    "Repository": repo,
                    "Tag": tag,
                    "Digest": image.digest or "<none>",
                    "CreatedSince": human_ago(created),
                    "CreatedAt": _created_at(created),
                    "Size": human_size(size),
                    "VirtualSize": human_size(size),
                    "SharedSize": "N/A",
                    "UniqueSize": "N/A",
                    "Containers": "N/A",
                    "Store": (stores or {}).get(image.id, "local"),
                    "ReadOnly": image.id in (stores or {}),
                }
            )
    return rows


async def inspect_image(store: Store, image: Image) -> dict[str, Any]:
    """``docker image inspect``'s object for an image."""
    config = image_config(await store.image_config(image.id))
    layers = await store.image_layers(image.id)
    driver = await store.driver.metadata(image.top_layer) if image.top_layer else {}
    repo_digests = []
    for name in image.names:
        repo = split_name(name)[0]
        for digest in image.digests:
            if f"{repo}@{digest}" not in repo_digests:
                repo_digests.append(f"{repo}@{digest}")
    return {
        "Id": "sha256:" + image.id,
        "RepoTags": [n for n in image.names if "@" not in n],
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": "",
        "Created": config.get("created", image.created),
        "Author": config.get("author", ""),
        "Config": config.get("config", {}),
        "Architecture": config.get("architecture", ""),
        "Variant": config.get("variant", ""),
        "Os": config.get("os", ""),
        "Size": sum(layer.diff_size for layer in layers),
        "VirtualSize": sum(layer.diff_size for layer in layers),
        "GraphDriver": {"Name": store.driver.name, "Data": dict(driver)},
        "RootFS": {"Type": "layers", "Layers": [layer.diff_digest for layer in layers]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Digest": image.digest,
        "NamesHistory": list(image.names_history),
    }
