"""Exec: validate, then hand out a single-use streaming URL for the command."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError, WrongStateError
from crio.server._common import runtime_of, state_of, streaming_of
from crio.server._cri_in import argv, require
from crio.server.deps import Deps
from crio.state.records import ContainerRecord, ContainerState
from crio.streaming.requests import ExecRequest

__all__ = ["check_streams", "exec_", "running_container"]


def check_streams(rpc: str, *, tty: bool, stdout: bool, stderr: bool) -> None:
    """The stream rules Exec and Attach share (as the kubelet's streaming server)."""
    if not stdout and not stderr:
        raise InvalidRequestError(f"{rpc}: one of stdout or stderr must be true")
    if tty and stderr:
        raise InvalidRequestError(
            f"{rpc}: tty and stderr cannot both be true (a terminal has one output stream)"
        )


def running_container(deps: Deps, rpc: str, container_id: str) -> ContainerRecord:
    """The container, which must exist (NOT_FOUND) and run (FAILED_PRECONDITION)."""
    ctr = state_of(deps).container(container_id)
    if ctr.state is not ContainerState.RUNNING:
        raise WrongStateError(
            f"{rpc}: container {ctr.container_id} is {ctr.state.value}, not running"
        )
    return ctr


async def exec_(deps: Deps, req: api.ExecRequest) -> api.ExecResponse:
    require(req.container_id, "container_id", "Exec")
    if not req.cmd or not req.cmd[0]:
        raise InvalidRequestError("Exec: cmd is empty")
    argv(req.cmd, "cmd", "Exec")
    check_streams("Exec", tty=req.tty, stdout=req.stdout, stderr=req.stderr)
    ctr = running_container(deps, "Exec", req.container_id)
    request = ExecRequest(
        runtime_of(deps, ctr.runtime_handler),
        ctr.container_id,
        tuple(req.cmd),
        tty=req.tty,
        stdin=req.stdin,
        stdout=req.stdout,
        stderr=req.stderr,
    )
    return api.ExecResponse(url=streaming_of(deps).url(request))
