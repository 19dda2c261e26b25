"""RemoveContainer: kill it if it runs, delete it and its writable layer; idempotent."""

from __future__ import annotations

import logging

from crio.api import api_pb2 as api
from crio.errors import NotFoundError
from crio.server._common import begin_intent, publish, state_of
from crio.server._cri_in import require
from crio.server._lifecycle import remove_container_locked, stop_container_locked
from crio.server.deps import Deps
from crio.state.hub import EventKind
from crio.state.intents import Intent, Operation
from crio.state.records import ContainerState

__all__ = ["remove_container"]

log = logging.getLogger("crio.server")


async def remove_container(
    deps: Deps, req: api.RemoveContainerRequest
) -> api.RemoveContainerResponse:
    require(req.container_id, "container_id", "RemoveContainer")
    state = state_of(deps)
    try:
        container_id = state.container(req.container_id).container_id
    except NotFoundError:
        log.info("RemoveContainer: container %s is already gone", req.container_id)
        return api.RemoveContainerResponse()
    stopped = None
    async with state.lock(container_id):
        try:
            ctr = state.container(container_id)
        except NotFoundError:
            return api.RemoveContainerResponse()
        # A crash from here on is rolled forward at the next start.
        await begin_intent(deps, Intent(Operation.REMOVE_CONTAINER, container=ctr))
        try:
            if ctr.state is not ContainerState.EXITED:
                stopped = await stop_container_locked(deps, ctr, 0)
                ctr = stopped or state.container(container_id)
            await remove_container_locked(deps, ctr)
        finally:
            state.end(container_id)
    if stopped is not None:
        publish(deps, EventKind.STOPPED, stopped)
    publish(deps, EventKind.DELETED, ctr)
    return api.RemoveContainerResponse()
