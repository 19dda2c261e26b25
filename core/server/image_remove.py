"""RemoveImage: untag, or remove an image no container uses; an absent image is success."""

from __future__ import annotations

import logging

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError
from crio.events import ImageEvent
from crio.image.local import candidates, find_image
from crio.server._images import settings, store_of
from crio.server.deps import Deps

__all__ = ["remove_image"]

log = logging.getLogger("crio.server")


async def remove_image(deps: Deps, req: api.RemoveImageRequest) -> api.RemoveImageResponse:
    text = req.image.image
    if not text:
        raise InvalidRequestError("RemoveImage: image.image is empty")
    store = store_of(deps, "RemoveImage")
    conf = await settings(deps)
    image = await find_image(store, text, conf.registries)
    if image is None:
        return api.RemoveImageResponse()  # already gone (CRI: idempotent)
    named = next((k for k in candidates(text, conf.registries) if k in image.names), None)
    if named is not None and len(image.names) > 1:
        # Named by one of several tags: only that name goes (as CRI-O does).
        await store.untag_image(image.id, named)
        log.info("removed name %s from image %s", named, image.id)
        return api.RemoveImageResponse()
    deleted = await store.delete_image(image.id)  # WrongStateError while a container uses it
    deps.plugins.notify(
        "crio_image_removed",
        image=ImageEvent(image_id=deleted.image_id, names=tuple(deleted.names)),
    )
    return api.RemoveImageResponse()
