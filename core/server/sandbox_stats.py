"""PodSandboxStats and ListPodSandboxStats: the pod's cgroup, network and containers."""

from __future__ import annotations

from collections.abc import Sequence

from crio.api import api_pb2 as api
from crio.server import _stats
from crio.server._common import labels_match, state_of
from crio.server._cri_in import require
from crio.server.deps import Deps
from crio.state.records import ContainerRecord, ContainerState, SandboxRecord, SandboxState

__all__ = ["list_pod_sandbox_stats", "pod_sandbox_stats"]


def _members(deps: Deps, pods: Sequence[SandboxRecord]) -> list[ContainerRecord]:
    """The containers CRI reports in the pods' stats (not the infra one, not exited)."""
    wanted = {p.pod_sandbox_id for p in pods}
    return [
        c
        for c in state_of(deps).containers()
        if c.pod_sandbox_id in wanted and not c.infra and c.state is not ContainerState.EXITED
    ]


async def pod_sandbox_stats(
    deps: Deps, req: api.PodSandboxStatsRequest
) -> api.PodSandboxStatsResponse:
    require(req.pod_sandbox_id, "pod_sandbox_id", "PodSandboxStats")
    pod = state_of(deps).sandbox(req.pod_sandbox_id)
    reply = api.PodSandboxStatsResponse()
    await _stats.fill_sandbox_stats(deps, [pod], _members(deps, [pod]), lambda: reply.stats)
    return reply


async def list_pod_sandbox_stats(
    deps: Deps, req: api.ListPodSandboxStatsRequest
) -> api.ListPodSandboxStatsResponse:
    flt = req.filter
    state = state_of(deps)
    pods = [
        p
        for p in state.sandboxes()
        if p.state is SandboxState.READY
        and (not flt.id or p.pod_sandbox_id.startswith(flt.id))
        and labels_match(p.labels, flt.label_selector)
    ]
    reply = api.ListPodSandboxStatsResponse()
    await _stats.fill_sandbox_stats(deps, pods, _members(deps, pods), reply.stats.add)
    _stats.forget_gone(deps)
    return reply
