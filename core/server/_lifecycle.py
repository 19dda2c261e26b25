"""Container steps several RPCs share: recording exits, stopping, removing.

The ``*_locked`` functions expect the caller to hold the container's lock
(``state.lock(container_id)``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from crio.errors import NotFoundError, OCIRuntimeError
from crio.oci.runtime import ContainerState as RuntimeState
from crio.oci.runtime import State
from crio.server._common import publish, runtime_of, state_of
from crio.server._containers import delete_layer
from crio.state.hub import EventKind
from crio.state.records import ContainerRecord, ContainerState

if TYPE_CHECKING:
    from crio.server.deps import Deps

__all__ = [
    "exited_record",
    "record_exit_locked",
    "remove_container_locked",
    "spawn_exit_watch",
    "stop_container_locked",
]

log = logging.getLogger("crio.server")


def exited_record(ctr: ContainerRecord, final: RuntimeState, now: int) -> ContainerRecord:
    """``ctr`` once its process has exited as ``final`` reports."""
    reason = final.reason or ("Completed" if final.exit_code == 0 else "Error")
    return dataclasses.replace(
        ctr,
        state=ContainerState.EXITED,
        started_at=ctr.started_at or final.started_at,
        finished_at=final.finished_at or now,
        exit_code=final.exit_code,
        reason=reason,
        message=final.message,
    )


async def record_exit_locked(
    deps: Deps, container_id: str, final: RuntimeState
) -> ContainerRecord | None:
    """Record the exit durably; None when the container is gone or already exited."""
    state = state_of(deps)
    try:
        ctr = state.container(container_id)
    except NotFoundError:
        return None
    if ctr.state is ContainerState.EXITED:
        return None
    new = exited_record(ctr, final, deps.clock())
    await state.save_container(new)
    return new


async def _watch_exit(deps: Deps, container_id: str, handler: str) -> None:
    runtime = runtime_of(deps, handler)
    try:
        final = await runtime.wait_container(container_id)
    except NotFoundError:
        return
    async with state_of(deps).lock(container_id):
        new = await record_exit_locked(deps, container_id, final)
    if new is not None:
        log.info("container %s exited with %d (%s)", container_id, new.exit_code, new.reason)
        publish(deps, EventKind.STOPPED, new)


def spawn_exit_watch(deps: Deps, ctr: ContainerRecord) -> None:
    """Record the container's exit whenever it happens."""
    deps.tasks.spawn(
        _watch_exit(deps, ctr.container_id, ctr.runtime_handler),
        name=f"watching the exit of container {ctr.container_id}",
    )


async def stop_container_locked(
    deps: Deps, ctr: ContainerRecord, timeout: float
) -> ContainerRecord | None:
    """Stop the container (stop signal, ``timeout``, SIGKILL) and record its exit.

    :returns: the new record, or None when it had already exited.
    """
    runtime = runtime_of(deps, ctr.runtime_handler)
    await runtime.stop_container(ctr.container_id, timeout)
    final = await runtime.container_state(ctr.container_id)
    if final.state is not State.STOPPED:
        raise OCIRuntimeError(
            f"container {ctr.container_id} is still {final.state.value} after being stopped"
        )
    return await record_exit_locked(deps, ctr.container_id, final)


async def remove_container_locked(deps: Deps, ctr: ContainerRecord) -> None:
    """Delete the exited container from its runtime and the store, then forget it durably.

    The runtime's delete and the store's unmount and layer removal touch
    different things once the process is gone, so they run together (unless
    poststop hooks, run by the delete, need the bundle); the record goes
    last, so that a crash in between leaves a record to retry with.
    """
    runtime = runtime_of(deps, ctr.runtime_handler)
    if ctr.poststop_hooks:
        # The runtime's delete runs them: the bundle and rootfs must still be there.
        await runtime.remove_container(ctr.container_id)
    results = await asyncio.gather(
        asyncio.sleep(0) if ctr.poststop_hooks else runtime.remove_container(ctr.container_id),
        delete_layer(deps, ctr.container_id) if deps.store is not None else asyncio.sleep(0),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    await state_of(deps).remove_container(ctr.container_id)
