"""ListContainerStats: stats of the containers matching the filter."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.server import _stats
from crio.server._common import labels_match, state_of
from crio.server.deps import Deps
from crio.state.records import ContainerState

__all__ = ["list_container_stats"]


async def list_container_stats(
    deps: Deps, req: api.ListContainerStatsRequest
) -> api.ListContainerStatsResponse:
    flt = req.filter
    state = state_of(deps)
    ctrs = [
        c
        for c in state.containers(flt.pod_sandbox_id or None)
        if not c.infra
        and c.state is not ContainerState.EXITED
        and (not flt.id or c.container_id.startswith(flt.id))
        and labels_match(c.labels, flt.label_selector)
    ]
    reply = api.ListContainerStatsResponse()
    await _stats.fill_container_stats(deps, ctrs, lambda _ctr: reply.stats.add())
    _stats.forget_gone(deps)
    return reply
