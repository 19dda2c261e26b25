"""PortForward: validate, then hand out a single-use streaming URL into the pod's network."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError, WrongStateError
from crio.server._common import runtime_of, state_of, streaming_of
from crio.server._cri_in import require
from crio.server.deps import Deps
from crio.state.records import SandboxState
from crio.streaming.requests import PortForwardRequest

__all__ = ["port_forward"]


async def port_forward(deps: Deps, req: api.PortForwardRequest) -> api.PortForwardResponse:
    require(req.pod_sandbox_id, "pod_sandbox_id", "PortForward")
    for port in req.port:
        if not 0 < port <= 0xFFFF:
            raise InvalidRequestError(f"PortForward: port {port} is not a TCP port (1-65535)")
    pod = state_of(deps).sandbox(req.pod_sandbox_id)
    if pod.state is not SandboxState.READY:
        raise WrongStateError(
            f"PortForward: pod sandbox {pod.pod_sandbox_id} is {pod.state.value}, not ready"
        )
    request = PortForwardRequest(
        runtime_of(deps, pod.runtime_handler), pod.pod_sandbox_id, tuple(req.port)
    )
    return api.PortForwardResponse(url=streaming_of(deps).url(request))
