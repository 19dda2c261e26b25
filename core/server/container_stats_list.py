"""ListContainerStats: stats of the containers matching the filter."""

from __future__ import annotations

import asyncio

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
    ctrs = [
        c
        for c in state_of(deps).containers(flt.pod_sandbox_id or None)
        if not c.infra
        and c.state is not ContainerState.EXITED
        and (not flt.id or c.container_id.startswith(flt.id))
        and labels_match(c.labels, flt.label_selector)
    ]
    stats = await asyncio.gather(*(_stats.container_stats(deps, c) for c in ctrs))
    return api.ListContainerStatsResponse(stats=stats)
