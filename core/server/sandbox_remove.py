"""RemovePodSandbox: stop the pod if needed, remove its containers, release everything."""

from __future__ import annotations

import asyncio
import logging
import shutil

from crio.api import api_pb2 as api
from crio.errors import NotFoundError
from crio.server._common import publish, runtime_of, sandbox_event, state_of
from crio.server._cri_in import require
from crio.server._lifecycle import remove_container_locked
from crio.server.deps import Deps
from crio.server.sandbox_stop import stop_pod_locked
from crio.state.hub import EventKind

__all__ = ["remove_pod_sandbox"]

log = logging.getLogger("crio.server")


async def remove_pod_sandbox(
    deps: Deps, req: api.RemovePodSandboxRequest
) -> api.RemovePodSandboxResponse:
    require(req.pod_sandbox_id, "pod_sandbox_id", "RemovePodSandbox")
    state = state_of(deps)
    try:
        pod = state.sandbox(req.pod_sandbox_id)
    except NotFoundError:
        log.info("RemovePodSandbox: pod sandbox %s is already gone", req.pod_sandbox_id)
        return api.RemovePodSandboxResponse()
    pod_id = pod.pod_sandbox_id
    async with state.lock(pod_id):
        try:
            pod = state.sandbox(pod_id)
        except NotFoundError:
            return api.RemovePodSandboxResponse()
        pod = await stop_pod_locked(deps, pod)

        async def remove(container_id: str) -> None:
            async with state.lock(container_id):
                try:
                    ctr = state.container(container_id)
                except NotFoundError:
                    return
                await remove_container_locked(deps, ctr)
            publish(deps, EventKind.DELETED, ctr)

        ids = [c.container_id for c in state.containers(pod_id)]
        await asyncio.gather(*(remove(cid) for cid in ids))
        await runtime_of(deps, pod.runtime_handler).remove_sandbox(pod_id)
        await asyncio.to_thread(shutil.rmtree, pod.run_dir, True)
        await state.remove_sandbox(pod_id)
    deps.plugins.notify("crio_sandbox_removed", sandbox=sandbox_event(pod))
    return api.RemovePodSandboxResponse()
