"""Pure helpers on lists of records: lookups, name moves, layer chains."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Iterable, Sequence

from crio.errors import InvalidRequestError, NotFoundError
from crio.storage.records import Container, Image, Layer, R

__all__ = [
    "chain",
    "find",
    "find_image",
    "layer_id_for",
    "random_id",
    "referenced_layers",
    "with_names_moved",
]


def random_id() -> str:
    """A new 64-hex id (containers/storage's ``stringid.GenerateRandomID``)."""
    while True:
        value = secrets.token_hex(32)
        if not value[:12].isdigit():  # an all-digit short id is confusing; c/storage avoids it
            return value


def layer_id_for(parent: str | None, diff_digest: str) -> str:
    """The layer id containers/image gives a layer, so stores share layers.

    The first layer's id is its diff digest's hex; every other layer's is
    ``sha256(PARENT + "+" + DIFFHEX)``.
    """
    hex_part = diff_digest.partition(":")[2] or diff_digest
    if not parent:
        return hex_part
    return hashlib.sha256(f"{parent}+{hex_part}".encode()).hexdigest()


def find(records: Sequence[R], key: str, what: str) -> R:
    """By id, name, or unique id prefix (at least 3 characters), as containers/storage.

    :raises NotFoundError: nothing (or more than one record) matches.
    """
    if not key:
        raise InvalidRequestError(f"{what} id or name is empty")
    for record in records:
        if record.id == key:
            return record
    for record in records:
        if key in record.names:
            return record
    bare = key.removeprefix("sha256:")
    if len(bare) >= 3 and all(c in "0123456789abcdef" for c in bare):
        hits = [r for r in records if r.id.startswith(bare)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise NotFoundError(f"{what} id prefix {key!r} is ambiguous ({len(hits)} matches)")
    raise NotFoundError(f"{what} {key!r} not found")


def find_image(images: Sequence[Image], key: str) -> Image:
    """Like :func:`find`, also matching ``sha256:`` manifest digests and ``NAME@DIGEST``."""
    try:
        return find(images, key, "image")
    except NotFoundError:
        pass
    digest = key.rpartition("@")[2] if "@" in key else key
    repo = key.rpartition("@")[0] if "@" in key else ""
    if digest.startswith("sha256:") and len(digest) == 71:
        for image in images:
            if digest in image.digests and (
                not repo
                or any(n.rpartition(":")[0] == repo or n == repo for n in image.names)
                or any(n.split("@")[0] == repo for n in image.names)
            ):
                return image
        for image in images:
            if digest in image.digests:
                return image
    raise NotFoundError(f"image {key!r} not found")


def with_names_moved(records: list[R], owner_id: str, names: Iterable[str]) -> list[R]:
    """Remove ``names`` from every record but ``owner_id`` (names are unique)."""
    moving = set(names)
    out: list[R] = []
    for record in records:
        if record.id != owner_id and moving & set(record.names):
            record = dataclasses.replace(
                record, names=tuple(n for n in record.names if n not in moving)
            )
        out.append(record)
    return out


def chain(layers: Sequence[Layer], top: str) -> list[Layer]:
    """The layer ``top`` and its parents, top first."""
    by_id = {layer.id: layer for layer in layers}
    out: list[Layer] = []
    current = top
    while current:
        layer = by_id.get(current)
        if layer is None or layer in out:
            break
        out.append(layer)
        current = layer.parent
    return out


def referenced_layers(
    layers: Sequence[Layer], images: Sequence[Image], containers: Sequence[Container]
) -> set[str]:
    """Every layer some image or container needs, parents included."""
    keep: set[str] = set()
    tops = [i.top_layer for i in images] + [m for i in images for m in i.mapped_layers]
    tops += [c.layer for c in containers]
    for top in tops:
        keep.update(layer.id for layer in chain(layers, top))
    return keep
