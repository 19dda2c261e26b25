"""ListContainers: filtered by id (or prefix), pod, state and labels; from memory only."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.server import _cri_out
from crio.server._common import labels_match, state_of
from crio.server.deps import Deps

__all__ = ["list_containers"]


async def list_containers(deps: Deps, req: api.ListContainersRequest) -> api.ListContainersResponse:
    flt = req.filter
    state = state_of(deps)
    ctrs = state.containers(flt.pod_sandbox_id or None)
    out = []
    want_state = flt.state.state if flt.HasField("state") else None
    for ctr in ctrs:
        if ctr.infra:
            continue
        if flt.id and not ctr.container_id.startswith(flt.id):
            continue
        if want_state is not None and _cri_out.container_state(ctr.state) != want_state:
            continue
        if flt.label_selector and not labels_match(ctr.labels, flt.label_selector):
            continue
        out.append(ctr)
    out.sort(key=lambda c: c.created_at)
    return api.ListContainersResponse(containers=[_cri_out.container(c) for c in out])
