"""What the image RPCs share: the store, settings from crio.toml, the proto Image."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from crio.api import api_pb2 as api
from crio.errors import UnavailableError
from crio.image.local import ImageSummary
from crio.image.pull import ImageSettings

if TYPE_CHECKING:
    from crio.server.deps import Deps
    from crio.storage import Store

__all__ = ["image_message", "settings", "store_of"]


def store_of(deps: Deps, rpc: str) -> Store:
    if deps.store is None:
        raise UnavailableError(f"{rpc}: the image store is not available")
    return deps.store


async def settings(deps: Deps) -> ImageSettings:
    """``[crio.image]`` with registries.conf and registries.d read now (they may change)."""
    return await asyncio.to_thread(ImageSettings.from_config, deps.config)


def image_message(summary: ImageSummary) -> api.Image:
    message = api.Image(
        id=summary.id,
        repo_tags=list(summary.repo_tags),
        repo_digests=list(summary.repo_digests),
        size=summary.size,
        username=summary.username,
        spec=api.ImageSpec(image=summary.id),
    )
    if summary.uid is not None:
        message.uid.value = summary.uid
    return message
