"""PodSandboxStats and ListPodSandboxStats: the pod's cgroup, network and containers."""

from __future__ import annotations

import asyncio

from crio.api import api_pb2 as api
from crio.server import _stats
from crio.server._common import labels_match, state_of
from crio.server._cri_in import require
from crio.server.deps import Deps
from crio.state.records import ContainerState, SandboxRecord, SandboxState

__all__ = ["list_pod_sandbox_stats", "pod_sandbox_stats"]


async def _one(deps: Deps, pod: SandboxRecord) -> api.PodSandboxStats:
    containers = [
        c
        for c in state_of(deps).containers(pod.pod_sandbox_id)
        if not c.infra and c.state is not ContainerState.EXITED
    ]
    return await _stats.sandbox_stats(deps, pod, containers)


async def pod_sandbox_stats(
    deps: Deps, req: api.PodSandboxStatsRequest
) -> api.PodSandboxStatsResponse:
    require(req.pod_sandbox_id, "pod_sandbox_id", "PodSandboxStats")
    pod = state_of(deps).sandbox(req.pod_sandbox_id)
    return api.PodSandboxStatsResponse(stats=await _one(deps, pod))


async def list_pod_sandbox_stats(
    deps: Deps, req: api.ListPodSandboxStatsRequest
) -> api.ListPodSandboxStatsResponse:
    flt = req.filter
    pods = [
        p
        for p in state_of(deps).sandboxes()
        if p.state is SandboxState.READY
        and (not flt.id or p.pod_sandbox_id.startswith(flt.id))
        and labels_match(p.labels, flt.label_selector)
    ]
    stats = await asyncio.gather(*(_one(deps, p) for p in pods))
    return api.ListPodSandboxStatsResponse(stats=stats)
