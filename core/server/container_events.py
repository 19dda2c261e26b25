"""GetContainerEvents: a stream of container changes, as they are recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator

from crio.api import api_pb2 as api
from crio.server import _cri_out
from crio.server.deps import Deps
from crio.state.hub import ContainerChange

__all__ = ["get_container_events"]


def _message(change: ContainerChange) -> api.ContainerEventResponse:
    reply = api.ContainerEventResponse(
        container_id=change.container_id,
        container_event_type=change.kind.value,
        created_at=change.created_at,
        containers_statuses=[_cri_out.container_status(c) for c in change.containers],
    )
    if change.sandbox is not None:
        reply.pod_sandbox_status.CopyFrom(_cri_out.pod_sandbox_status(change.sandbox))
    return reply


async def get_container_events(
    deps: Deps, req: api.GetEventsRequest
) -> AsyncIterator[api.ContainerEventResponse]:
    async for change in deps.events.subscribe():
        yield _message(change)
