"""ImageStatus: one image, or no image when it is not in the store (not an error)."""

from __future__ import annotations

import json

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError
from crio.image.local import find_image, summarize
from crio.server._images import image_message, settings, store_of
from crio.server.deps import Deps

__all__ = ["image_status"]


async def image_status(deps: Deps, req: api.ImageStatusRequest) -> api.ImageStatusResponse:
    if not req.image.image:
        raise InvalidRequestError("ImageStatus: image.image is empty")
    store = store_of(deps, "ImageStatus")
    conf = await settings(deps)
    image = await find_image(store, req.image.image, conf.registries)
    if image is None:
        return api.ImageStatusResponse()
    summary = await summarize(store, image)
    info = {}
    if req.verbose:
        info["info"] = json.dumps(
            {
                "id": image.id,
                "names": list(image.names),
                "digests": list(image.digests),
                "created": image.created,
                "imageSpec": summary.config,
            }
        )
    return api.ImageStatusResponse(image=image_message(summary), info=info)
