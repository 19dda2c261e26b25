"""PullImage: fetch an image into the store, verified and checked against the policy."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time

from crio._memory import release_free_memory
from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError
from crio.events import ImageEvent
from crio.image.auth import Credentials
from crio.image.copy import Progress
from crio.image.reference import Reference
from crio.image.transport import ImageDestination
from crio.metrics import registry_of
from crio.server._images import settings, store_of
from crio.server.deps import Deps

__all__ = ["pull_image"]

log = logging.getLogger("crio.server")


def credentials(auth: api.AuthConfig) -> Credentials | None:
    """The CRI AuthConfig as credentials (``auth`` is base64 of USER:PASSWORD)."""
    username, password = auth.username, auth.password
    if auth.auth:
        try:
            decoded = base64.b64decode(auth.auth, validate=True).decode()
        except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text
            raise InvalidRequestError(
                "PullImage: auth.auth is not base64 of USER:PASSWORD"
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidRequestError("PullImage: auth.auth is not base64 of USER:PASSWORD")
    creds = Credentials(username, password, auth.identity_token, auth.registry_token)
    return creds or None


async def pull_image(
    deps: Deps, req: api.PullImageRequest, *, auth_files: tuple[str, ...] | None = None
) -> api.PullImageResponse:
    """:param auth_files: in place of ``global_auth_file`` (the pause image's own file)."""
    image = req.image.image
    if not image:
        raise InvalidRequestError("PullImage: image.image is empty")
    store = store_of(deps, "PullImage")
    creds = credentials(req.auth)
    conf = await settings(deps)
    if auth_files is not None:
        conf = dataclasses.replace(conf, auth_files=auth_files)
    storage = deps.plugins.image_transport("containers-storage")
    if storage is None:
        raise InvalidRequestError("PullImage: no plugin provides the containers-storage transport")

    async def destination(ref: Reference | None, reference: str) -> ImageDestination:
        return await storage.open_destination(str(ref) if ref else "", conf.context(store=store))

    fetched: dict[str, int] = {}

    def progress(step: Progress) -> None:
        if step.kind == "done":
            fetched[step.digest] = step.done

    started, ok = time.perf_counter(), False
    try:
        result = await deps.image_pulls.get().pull(
            deps.plugins,
            image,
            conf,
            destination,
            credentials=creds,
            store=store,
            share_key="cri",
            progress=progress,
        )
        ok = True
    finally:
        registry = registry_of(result.reference if ok else image)
        deps.metrics.image_pulled(
            registry, sum(fetched.values()), time.perf_counter() - started, ok
        )
        # The layer buffers are freed by now; let the kernel have their pages back.
        await asyncio.to_thread(release_free_memory)
    log.info(
        "pulled %s as image %s (manifest %s)",
        result.reference,
        result.image_id,
        result.manifest_digest,
    )
    deps.plugins.notify(
        "crio_image_pulled", image=ImageEvent(image_id=result.image_id, names=(result.reference,))
    )
    return api.PullImageResponse(image_ref=result.image_id)
