"""Images already in the store: finding them by what the kubelet sends, describing them.

An image spec may be an image id (full, ``sha256:``-prefixed or a prefix), a
name with tag or digest, or a short name, which is looked for under every
candidate registries.conf gives it (``busybox`` is
``docker.io/library/busybox:latest`` unless the search list says otherwise).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crio.errors import CrioError, NotFoundError
from crio.image.reference import is_image_id, normalize, parse
from crio.image.registries import Registries

if TYPE_CHECKING:
    from crio.storage import Image, Store

__all__ = ["ImageSummary", "candidates", "find_image", "summarize", "user_of"]


def candidates(text: str, registries: Registries) -> list[str]:
    """The keys to look ``text`` up by in the store, most likely first."""
    if is_image_id(text):
        return [text.removeprefix("sha256:")]
    try:
        ref = parse(text)
    except CrioError:
        return [text]  # an id prefix, or nothing the store will know
    refs = [normalize(ref)] if ref.qualified else registries.candidates(ref)
    keys = [str(r if r.tag or r.digest else r.with_tag("latest")) for r in refs]
    return [*dict.fromkeys([*keys, text])]


async def find_image(store: Store, text: str, registries: Registries) -> Image | None:
    """The stored image ``text`` names, or None."""
    for key in candidates(text, registries):
        with contextlib.suppress(NotFoundError):
            return await store.image(key)
    return None


def user_of(config_user: str) -> tuple[int | None, str]:
    """CRI's (uid, username) from the config's ``User`` (``1000``, ``1000:1000``, ``nobody``)."""
    user = config_user.split(":", 1)[0]
    if not user:
        return None, ""
    if user.isdigit():
        return int(user), ""
    return None, user


@dataclass(frozen=True, slots=True)
class ImageSummary:
    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int
    uid: int | None
    username: str
    config: dict[str, Any]


def _repo(name: str) -> str:
    if "@" in name:
        return name.partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def _repo_digests(names: Sequence[str], digests: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = [n for n in names if "@" in n]
    for repo in dict.fromkeys(_repo(n) for n in names):
        out.extend(f"{repo}@{d}" for d in digests)
    return tuple(dict.fromkeys(out))


async def summarize(store: Store, image: Image) -> ImageSummary:
    try:
        config = json.loads(await store.image_config(image.id))
    except (CrioError, ValueError):
        config = {}
    uid, username = user_of(str((config.get("config") or {}).get("User") or ""))
    return ImageSummary(
        id=image.id,
        repo_tags=tuple(n for n in image.names if "@" not in n),
        repo_digests=_repo_digests(image.names, image.digests),
        size=await store.image_size(image.id),
        uid=uid,
        username=username,
        config=config,
    )
