"""StopContainer: the stop signal, the timeout, then SIGKILL; stopping a stopped one is fine."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError
from crio.server._common import publish, state_of
from crio.server._cri_in import require
from crio.server._lifecycle import stop_container_locked
from crio.server.deps import Deps
from crio.state.hub import EventKind
from crio.state.records import ContainerState

__all__ = ["stop_container"]


async def stop_container(deps: Deps, req: api.StopContainerRequest) -> api.StopContainerResponse:
    require(req.container_id, "container_id", "StopContainer")
    if req.timeout < 0:
        raise InvalidRequestError(f"StopContainer: timeout {req.timeout} is negative")
    state = state_of(deps)
    container_id = state.container(req.container_id).container_id
    async with state.lock(container_id):
        ctr = state.container(container_id)
        if ctr.state is ContainerState.EXITED:
            return api.StopContainerResponse()
        new = await stop_container_locked(deps, ctr, float(req.timeout))
    if new is not None:
        publish(deps, EventKind.STOPPED, new)
    return api.StopContainerResponse()
