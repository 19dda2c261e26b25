"""Start-up: hand the recorded pods and containers back to their runtimes.

A container that exited while crio was down gets its exit recorded (and
``crio_container_exited`` is called for it); a running one gets an exit
watcher again. Nothing running is touched.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from crio.errors import CrioError
from crio.oci.runtime import ContainerSpec, SandboxSpec, State
from crio.server._common import publish, state_of
from crio.server._lifecycle import record_exit_locked, spawn_exit_watch
from crio.state.hub import EventKind
from crio.state.records import ContainerRecord, ContainerState, SandboxRecord

if TYPE_CHECKING:
    from crio.server.deps import Deps

__all__ = ["container_spec", "restore", "sandbox_spec"]

log = logging.getLogger("crio.server")


def sandbox_spec(pod: SandboxRecord) -> SandboxSpec:
    return SandboxSpec(
        pod_sandbox_id=pod.pod_sandbox_id,
        name=pod.name,
        namespace=pod.namespace,
        uid=pod.uid,
        attempt=pod.attempt,
        hostname=pod.hostname,
        run_dir=Path(pod.run_dir),
        log_directory=pod.log_directory,
        cgroup_parent=pod.cgroup_parent,
        labels=dict(pod.labels),
        annotations=dict(pod.annotations),
        network_mode=pod.network_mode,
        pid_mode=pod.pid_mode,
        ipc_mode=pod.ipc_mode,
        sysctls=dict(pod.sysctls),
        privileged=pod.privileged,
    )


def container_spec(ctr: ContainerRecord) -> ContainerSpec:
    return ContainerSpec(
        container_id=ctr.container_id,
        pod_sandbox_id=ctr.pod_sandbox_id,
        name=ctr.name,
        bundle=Path(ctr.bundle),
        oci_spec={},
        log_path=ctr.log_path,
        stdin=ctr.stdin,
        stdin_once=ctr.stdin_once,
        tty=ctr.tty,
        annotations=dict(ctr.annotations),
    )


async def _restore_container(deps: Deps, ctr: ContainerRecord) -> None:
    runtime = deps.runtimes.get(ctr.runtime_handler)
    if runtime is None:
        log.error(
            "container %s: its runtime handler %s is no longer configured",
            ctr.container_id,
            ctr.runtime_handler,
        )
        return
    status = await runtime.restore_container(container_spec(ctr))
    if ctr.state is ContainerState.EXITED:
        return
    if status.state is State.STOPPED:
        new = await record_exit_locked(deps, ctr.container_id, status)
        if new is not None:
            log.info(
                "container %s exited while crio was down (exit code %d)",
                ctr.container_id,
                new.exit_code,
            )
            publish(deps, EventKind.STOPPED, new)
        return
    if status.state is State.RUNNING and ctr.state is ContainerState.CREATED:
        # Started, but crio went down before it recorded that.
        ctr = dataclasses.replace(
            ctr, state=ContainerState.RUNNING, started_at=status.started_at, pid=status.pid
        )
        await state_of(deps).save_container(ctr)
    spawn_exit_watch(deps, ctr)


async def restore(deps: Deps) -> None:
    """Re-attach every recorded pod and container; errors are logged per object."""
    state = state_of(deps)
    for pod in state.sandboxes():
        runtime = deps.runtimes.get(pod.runtime_handler)
        if runtime is None:
            log.error(
                "pod sandbox %s: its runtime handler %s is no longer configured",
                pod.pod_sandbox_id,
                pod.runtime_handler,
            )
            continue
        try:
            await runtime.restore_sandbox(sandbox_spec(pod))
        except CrioError as exc:
            log.error("pod sandbox %s could not be restored: %s", pod.pod_sandbox_id, exc)
    for ctr in state.containers():
        try:
            await _restore_container(deps, ctr)
        except CrioError as exc:
            log.error("container %s could not be restored: %s", ctr.container_id, exc)
    log.info(
        "restored %d pod sandbox(es) and %d container(s)",
        len(state.sandboxes()),
        len(state.containers()),
    )
