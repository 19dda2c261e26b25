"""StartContainer: start a created container's process."""

from __future__ import annotations

import dataclasses

from crio.api import api_pb2 as api
from crio.errors import OCIRuntimeError, WrongStateError
from crio.server._common import publish, runtime_of, state_of
from crio.server._cri_in import require
from crio.server._lifecycle import record_exit_locked, spawn_exit_watch
from crio.server.deps import Deps
from crio.state.hub import EventKind
from crio.state.records import ContainerRecord, ContainerState

__all__ = ["start_container"]


async def start_container(deps: Deps, req: api.StartContainerRequest) -> api.StartContainerResponse:
    require(req.container_id, "container_id", "StartContainer")
    state = state_of(deps)
    found = state.container(req.container_id)
    async with state.pod_lock(found.pod_sandbox_id).shared():
        ctr = await _start_locked(deps, found.container_id)
    spawn_exit_watch(deps, ctr)
    publish(deps, EventKind.STARTED, ctr)
    return api.StartContainerResponse()


async def _start_locked(deps: Deps, container_id: str) -> ContainerRecord:
    state = state_of(deps)
    async with state.lock(container_id):
        ctr = state.container(container_id)
        if ctr.state is not ContainerState.CREATED:
            raise WrongStateError(
                f"StartContainer: container {container_id} is {ctr.state.value}, not created"
            )
        runtime = runtime_of(deps, ctr.runtime_handler)
        try:
            await runtime.start_container(container_id)
        except OCIRuntimeError:
            # The process is gone with the failed start: record that, then report.
            await runtime.stop_container(container_id, 0)
            await record_exit_locked(
                deps, container_id, await runtime.container_state(container_id)
            )
            raise
        status = await runtime.container_state(container_id)
        ctr = dataclasses.replace(
            ctr,
            state=ContainerState.RUNNING,
            started_at=status.started_at or deps.clock(),
            pid=status.pid,
        )
        await state.save_container(ctr)
    return ctr
