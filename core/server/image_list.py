"""ListImages: every image in the store, or the one the filter names."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.image.local import find_image, summarize
from crio.server._images import image_message, settings, store_of
from crio.server.deps import Deps

__all__ = ["list_images"]


async def list_images(deps: Deps, req: api.ListImagesRequest) -> api.ListImagesResponse:
    store = store_of(deps, "ListImages")
    wanted = req.filter.image.image if req.HasField("filter") else ""
    if wanted:
        conf = await settings(deps)
        image = await find_image(store, wanted, conf.registries)
        images = [image] if image is not None else []
    else:
        images = await store.images()
    messages = [image_message(await summarize(store, image)) for image in images]
    return api.ListImagesResponse(images=messages)
