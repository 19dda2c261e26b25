"""StopPodSandbox: kill the pod's processes and detach its network; idempotent."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from crio.api import api_pb2 as api
from crio.errors import CrioError, NotFoundError
from crio.server._common import publish, runtime_of, sandbox_event, state_of
from crio.server._cri_in import require
from crio.server._lifecycle import stop_container_locked
from crio.server.deps import Deps
from crio.server.sandbox_run import pod_network
from crio.state.hub import EventKind
from crio.state.records import ContainerState, SandboxRecord, SandboxState

__all__ = ["stop_ended_pods", "stop_pod_locked", "stop_pod_sandbox"]

log = logging.getLogger("crio.server")


async def _kill_containers(deps: Deps, pod: SandboxRecord) -> None:
    state = state_of(deps)

    async def kill(container_id: str) -> None:
        async with state.lock(container_id):
            try:
                ctr = state.container(container_id)
            except NotFoundError:
                return
            if ctr.state is ContainerState.EXITED:
                return
            new = await stop_container_locked(deps, ctr, 0)
        if new is not None:
            publish(deps, EventKind.STOPPED, new)

    ids = [c.container_id for c in state.containers(pod.pod_sandbox_id)]
    await asyncio.gather(*(kill(cid) for cid in ids))
    await runtime_of(deps, pod.runtime_handler).stop_sandbox(pod.pod_sandbox_id)


async def stop_pod_locked(deps: Deps, pod: SandboxRecord) -> SandboxRecord:
    """Stop a pod (the caller holds its lock); returns the NOTREADY record."""
    if pod.state is SandboxState.NOTREADY:
        return pod
    jobs = [_kill_containers(deps, pod)]
    if not pod.host_network and deps.network is not None:
        # CNI DEL is mostly kernel work on the veth: run it while the processes die.
        jobs.append(deps.network.teardown(pod_network(pod)))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    new = dataclasses.replace(pod, state=SandboxState.NOTREADY)
    await state_of(deps).save_sandbox(new)
    deps.plugins.notify("crio_sandbox_stopped", sandbox=sandbox_event(new))
    return new


async def stop_pod_sandbox(
    deps: Deps, req: api.StopPodSandboxRequest
) -> api.StopPodSandboxResponse:
    require(req.pod_sandbox_id, "pod_sandbox_id", "StopPodSandbox")
    state = state_of(deps)
    try:
        pod = state.sandbox(req.pod_sandbox_id)
    except NotFoundError:
        # CRI: stopping what is already gone is success.
        log.info("StopPodSandbox: pod sandbox %s is already gone", req.pod_sandbox_id)
        return api.StopPodSandboxResponse()
    async with state.pod_lock(pod.pod_sandbox_id).exclusive():
        await stop_pod_locked(deps, state.sandbox(pod.pod_sandbox_id))
    return api.StopPodSandboxResponse()


def _why_ended(deps: Deps, pod: SandboxRecord) -> str:
    """Why a ready pod can no longer hold containers ("" while it can)."""
    state = state_of(deps)
    if pod.infra_container_id:
        try:
            infra = state.container(pod.infra_container_id)
        except NotFoundError:
            return "its infra container has no record"
        if infra.state is ContainerState.EXITED:
            return "its infra container has exited"
    runtime = deps.runtimes.get(pod.runtime_handler)
    return runtime.sandbox_ended(pod.pod_sandbox_id) if runtime is not None else ""


async def stop_ended_pods(deps: Deps) -> list[str]:
    """At start-up, after restore and reconcile: stop every ready pod whose sandbox
    ended while crio was down (its pause process, infra container or VM is gone,
    or a StopPodSandbox was cut short after killing it). The kubelet then sees it
    NOTREADY and makes the pod again, instead of creating containers in a pod
    that cannot hold them. Returns the ids stopped."""
    state = state_of(deps)
    stopped = []
    for pod in state.sandboxes():
        if pod.state is not SandboxState.READY:
            continue
        reason = _why_ended(deps, pod)
        if not reason:
            continue
        log.warning(
            "pod sandbox %s: %s while crio was down; stopping the pod (NOTREADY)",
            pod.pod_sandbox_id,
            reason,
        )
        try:
            async with state.pod_lock(pod.pod_sandbox_id).exclusive():
                await stop_pod_locked(deps, state.sandbox(pod.pod_sandbox_id))
        except CrioError as exc:
            log.error("pod sandbox %s could not be stopped: %s", pod.pod_sandbox_id, exc)
            continue
        stopped.append(pod.pod_sandbox_id)
    return stopped
