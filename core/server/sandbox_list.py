"""ListPodSandbox: filtered by id (or id prefix), state and labels."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.server import _cri_out
from crio.server._common import labels_match, state_of
from crio.server.deps import Deps

__all__ = ["list_pod_sandbox"]


async def list_pod_sandbox(
    deps: Deps, req: api.ListPodSandboxRequest
) -> api.ListPodSandboxResponse:
    flt = req.filter
    pods = state_of(deps).sandboxes()
    if flt.id:
        pods = [p for p in pods if p.pod_sandbox_id.startswith(flt.id)]
    if flt.HasField("state"):
        pods = [p for p in pods if _cri_out.pod_sandbox_state(p.state) == flt.state.state]
    if flt.label_selector:
        pods = [p for p in pods if labels_match(p.labels, flt.label_selector)]
    pods.sort(key=lambda p: p.created_at)
    return api.ListPodSandboxResponse(items=[_cri_out.pod_sandbox(p) for p in pods])
