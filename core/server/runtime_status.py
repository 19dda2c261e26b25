"""Status: RuntimeReady and NetworkReady, computed from the selected plugins."""

from __future__ import annotations

import json

from crio.api import api_pb2 as api
from crio.server.deps import Deps

__all__ = ["status"]


def _runtime_condition(deps: Deps) -> api.RuntimeCondition:
    for name, runtime in sorted(deps.runtimes.items()):
        ready, reason, message = runtime.ready()
        if not ready:
            return api.RuntimeCondition(
                type="RuntimeReady",
                status=False,
                reason=reason or "RuntimeNotReady",
                message=f"handler {name}: {message}",
            )
    if not deps.runtimes:
        return api.RuntimeCondition(
            type="RuntimeReady",
            status=False,
            reason="NoRuntime",
            message="no runtime handler is configured",
        )
    return api.RuntimeCondition(type="RuntimeReady", status=True)


def _network_condition(deps: Deps) -> api.RuntimeCondition:
    if deps.network is None:
        return api.RuntimeCondition(
            type="NetworkReady",
            status=False,
            reason="NetworkPluginNotReady",
            message=deps.network_error or "no network plugin is loaded",
        )
    ready, reason, message = deps.network.ready()
    if ready:
        return api.RuntimeCondition(type="NetworkReady", status=True)
    return api.RuntimeCondition(
        type="NetworkReady",
        status=False,
        reason=reason or "NetworkPluginNotReady",
        message=message,
    )


async def status(deps: Deps, req: api.StatusRequest) -> api.StatusResponse:
    conditions = [_runtime_condition(deps), _network_condition(deps)]
    info: dict[str, str] = {}
    if req.verbose:
        info["config"] = json.dumps(deps.config.model_dump(mode="json"), sort_keys=True)
        info["plugins"] = json.dumps(
            [
                {"name": p.name, "kinds": list(p.kinds), "loaded": p.loaded, "error": p.error}
                for p in deps.plugins.infos()
            ]
        )
        # How many GetContainerEvents streams are open (clients wait for theirs to count).
        info["containerEventStreams"] = str(deps.events.subscribers)
    return api.StatusResponse(status=api.RuntimeStatus(conditions=conditions), info=info)
