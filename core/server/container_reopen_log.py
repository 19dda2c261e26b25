"""ReopenContainerLog: make conmon reopen the log file after the kubelet rotated it."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.errors import WrongStateError
from crio.server._common import runtime_of, state_of
from crio.server._cri_in import require
from crio.server.deps import Deps
from crio.state.records import ContainerState

__all__ = ["reopen_container_log"]


async def reopen_container_log(
    deps: Deps, req: api.ReopenContainerLogRequest
) -> api.ReopenContainerLogResponse:
    require(req.container_id, "container_id", "ReopenContainerLog")
    ctr = state_of(deps).container(req.container_id)
    if ctr.state is not ContainerState.RUNNING:
        raise WrongStateError(
            f"ReopenContainerLog: container {ctr.container_id} is {ctr.state.value}, not running"
        )
    await runtime_of(deps, ctr.runtime_handler).reopen_log(ctr.container_id)
    return api.ReopenContainerLogResponse()
