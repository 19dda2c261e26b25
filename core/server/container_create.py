"""CreateContainer: the rootfs from the store, config.json, the runtime's create, the record."""

from __future__ import annotations

import logging

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError, WrongStateError
from crio.oci.container import ContainerRequest
from crio.server._common import Undo, new_id, publish, state_of
from crio.server._containers import make_container
from crio.server._cri_in import container_request, require
from crio.server.deps import Deps
from crio.state.hub import EventKind
from crio.state.records import SandboxRecord, SandboxState, container_name_key

__all__ = ["create_container"]

RPC = "CreateContainer"
log = logging.getLogger("crio.server")


async def create_container(
    deps: Deps, req: api.CreateContainerRequest
) -> api.CreateContainerResponse:
    require(req.pod_sandbox_id, "pod_sandbox_id", RPC)
    if not req.HasField("config"):
        raise InvalidRequestError(f"{RPC}: config is missing")
    request = container_request(req.config)
    state = state_of(deps)
    pod_id = state.sandbox(req.pod_sandbox_id).pod_sandbox_id
    # Shared: containers of one pod are made in parallel, but never while it is stopped.
    async with state.pod_lock(pod_id).shared():
        return await _create_locked(deps, req, request, state.sandbox(pod_id))


async def _create_locked(
    deps: Deps, req: api.CreateContainerRequest, request: ContainerRequest, pod: SandboxRecord
) -> api.CreateContainerResponse:
    state = state_of(deps)
    if pod.state is not SandboxState.READY:
        raise WrongStateError(
            f"{RPC}: pod sandbox {pod.pod_sandbox_id} is not ready (it was stopped)"
        )
    container_id = new_id()
    key = container_name_key(request.name, request.attempt, pod)
    state.reserve_name(key, container_id)
    undo = Undo(f"container {container_id}")
    try:
        async with state.lock(container_id):
            record = await make_container(
                deps,
                pod,
                request,
                container_id,
                key,
                undo,
                user_specified_image=req.config.image.user_specified_image,
            )
            await state.save_container(record)
    except BaseException:
        await undo.unwind()
        state.release_name(key, container_id)
        raise
    state.end(container_id)
    log.info("container %s (%s) created in pod %s", container_id, key, pod.pod_sandbox_id)
    publish(deps, EventKind.CREATED, record)
    return api.CreateContainerResponse(container_id=container_id)
