"""RemovePodSandbox: stop the pod if needed, remove its containers, release everything."""

from __future__ import annotations

import asyncio
import logging
import shutil

from crio.api import api_pb2 as api
from crio.errors import NotFoundError
from crio.server._common import begin_intent, publish, runtime_of, sandbox_event, state_of
from crio.server._cri_in import require
from crio.server._lifecycle import remove_container_locked
from crio.server.deps import Deps
from crio.server.sandbox_stop import stop_pod_locked
from crio.state.hub import EventKind
from crio.state.intents import Intent, Operation
from crio.state.records import SandboxRecord

__all__ = ["remove_pod_locked", "remove_pod_sandbox"]

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
    async with state.pod_lock(pod_id).exclusive():
        try:
            pod = state.sandbox(pod_id)
        except NotFoundError:
            return api.RemovePodSandboxResponse()
        # A crash from here on is rolled forward at the next start.
        await begin_intent(deps, Intent(Operation.REMOVE_POD_SANDBOX, sandbox=pod))
        try:
            pod = await remove_pod_locked(deps, pod)
        finally:
            state.end(pod_id)
    deps.plugins.notify("crio_sandbox_removed", sandbox=sandbox_event(pod))
    return api.RemovePodSandboxResponse()


async def remove_pod_locked(deps: Deps, pod: SandboxRecord) -> SandboxRecord:
    """Stop the pod, remove its containers, release it and forget it (pod lock held)."""
    state = state_of(deps)
    pod_id = pod.pod_sandbox_id
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
    return pod
