"""ExecSync: run a command in a running container and return its output and exit code."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError, OCIRuntimeError, WrongStateError
from crio.oci.runtime import State
from crio.server._common import runtime_of, state_of
from crio.server._cri_in import argv, require
from crio.server.deps import Deps
from crio.state.records import ContainerState

__all__ = ["exec_sync"]


async def exec_sync(deps: Deps, req: api.ExecSyncRequest) -> api.ExecSyncResponse:
    require(req.container_id, "container_id", "ExecSync")
    if not req.cmd or not req.cmd[0]:
        raise InvalidRequestError("ExecSync: cmd is empty")
    argv(req.cmd, "cmd", "ExecSync")
    if req.timeout < 0:
        raise InvalidRequestError(f"ExecSync: timeout {req.timeout} is negative")
    ctr = state_of(deps).container(req.container_id)
    if ctr.state is not ContainerState.RUNNING:
        raise WrongStateError(
            f"ExecSync: container {ctr.container_id} is {ctr.state.value}, not running"
        )
    runtime = runtime_of(deps, ctr.runtime_handler)
    try:
        result = await runtime.exec_sync(ctr.container_id, list(req.cmd), float(req.timeout))
    except OCIRuntimeError as exc:
        # The container ended while the command was being started: not crio's failure.
        if (await runtime.container_state(ctr.container_id)).state is State.STOPPED:
            raise WrongStateError(
                f"ExecSync: container {ctr.container_id} exited while the command started: {exc}"
            ) from exc
        raise
    return api.ExecSyncResponse(
        stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code
    )
