"""ContainerStats: CPU, memory and writable-layer use of one container."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.server import _stats
from crio.server._common import state_of
from crio.server._cri_in import require
from crio.server.deps import Deps

__all__ = ["container_stats"]


async def container_stats(deps: Deps, req: api.ContainerStatsRequest) -> api.ContainerStatsResponse:
    require(req.container_id, "container_id", "ContainerStats")
    ctr = state_of(deps).container(req.container_id)
    reply = api.ContainerStatsResponse()
    await _stats.fill_container_stats(deps, [ctr], lambda _ctr: reply.stats)
    return reply
