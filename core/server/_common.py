"""What the pod and container handlers share: lookups, undo, events, filters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from crio.errors import CrioError, UnavailableError
from crio.events import ContainerEvent, SandboxEvent
from crio.state.hub import ContainerChange, EventKind
from crio.state.intents import Intent
from crio.state.records import ContainerRecord, SandboxRecord

if TYPE_CHECKING:
    from crio.oci.runtime import Runtime
    from crio.server.deps import Deps
    from crio.state.store import StateStore
    from crio.storage import Store
    from crio.streaming.server import StreamServer

__all__ = [
    "Undo",
    "begin_intent",
    "container_event",
    "labels_match",
    "new_id",
    "publish",
    "runtime_of",
    "sandbox_event",
    "state_of",
    "store_of",
    "streaming_of",
]

A = TypeVar("A")
B = TypeVar("B")

log = logging.getLogger("crio.server")


def new_id() -> str:
    """A new pod or container id: 64 hex digits, as CRI-O's."""
    return secrets.token_hex(32)


def state_of(deps: Deps) -> StateStore:
    if deps.state is None:
        raise UnavailableError("crio's state store is not open")
    return deps.state


def store_of(deps: Deps) -> Store:
    if deps.store is None:
        raise UnavailableError("the image and layer store is not available on this node")
    return deps.store


def streaming_of(deps: Deps) -> StreamServer:
    if deps.streaming is None:
        raise UnavailableError("the streaming server is not running")
    return deps.streaming


def runtime_of(deps: Deps, handler: str) -> Runtime:
    runtime = deps.runtimes.get(handler)
    if runtime is None:
        raise UnavailableError(f"runtime handler {handler!r} is not configured any more")
    return runtime


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def sandbox_event(pod: SandboxRecord) -> SandboxEvent:
    return SandboxEvent(
        pod_sandbox_id=pod.pod_sandbox_id,
        name=pod.name,
        namespace=pod.namespace,
        uid=pod.uid,
        runtime_handler=pod.runtime_handler,
        labels=dict(pod.labels),
        annotations=dict(pod.annotations),
    )


def container_event(ctr: ContainerRecord) -> ContainerEvent:
    exited = ctr.finished_at != 0
    return ContainerEvent(
        container_id=ctr.container_id,
        pod_sandbox_id=ctr.pod_sandbox_id,
        name=ctr.name,
        image=ctr.image,
        exit_code=ctr.exit_code if exited else None,
        reason=ctr.reason,
    )


_HOOKS = {
    EventKind.CREATED: "crio_container_created",
    EventKind.STARTED: "crio_container_started",
    EventKind.STOPPED: "crio_container_exited",
    EventKind.DELETED: "crio_container_removed",
}


def publish(deps: Deps, kind: EventKind, ctr: ContainerRecord) -> None:
    """Tell the plugins and the GetContainerEvents subscribers about a container change."""
    if ctr.infra:
        return
    deps.plugins.notify(_HOOKS[kind], container=container_event(ctr))
    if not deps.events.subscribers:
        return
    state = deps.state
    pod = None
    siblings: tuple[ContainerRecord, ...] = ()
    if state is not None:
        with contextlib.suppress(CrioError):
            pod = state.sandbox(ctr.pod_sandbox_id)
        siblings = tuple(c for c in state.containers(ctr.pod_sandbox_id) if not c.infra)
    if kind is EventKind.DELETED or ctr.container_id not in {c.container_id for c in siblings}:
        siblings = (*siblings, ctr)
    deps.events.publish(ContainerChange(kind, ctr.container_id, deps.clock(), pod, siblings))


async def both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Run two steps concurrently; their results, or the first one's error.

    Unlike :func:`asyncio.gather`, an error or a cancellation returns only once
    both steps have ended, so that an :class:`Undo` never unwinds while a step
    still runs (and could push work it did after the unwinding).
    """
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.shield(asyncio.wait(tasks))
        raise
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return tasks[0].result(), tasks[1].result()


class Undo:
    """Steps that reverse a half-done operation, run last-in first-out on failure.

    A failing step is logged and the others still run: the caller's error
    is the one that matters. ``failed`` tells later steps that something
    could not be undone (an intent record is then kept for the next start).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.failed = False
        self._steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    def push(self, name: str, step: Callable[[], Awaitable[Any]]) -> None:
        self._steps.append((name, step))

    async def unwind(self) -> None:
        while self._steps:
            name, step = self._steps.pop()
            try:
                await step()
            except Exception as exc:
                self.failed = True
                log.error("%s: undoing %s failed: %s", self.what, name, exc, exc_info=exc)


async def begin_intent(deps: Deps, intent: Intent, undo: Undo | None = None) -> None:
    """Record ``intent`` durably; with ``undo``, it is dropped last when undone cleanly.

    When some step could not be undone the intent stays, and the next start
    of crio finishes the job (see :mod:`crio.server._reconcile`).
    """
    state = state_of(deps)
    await state.begin(intent)
    if undo is None:
        return

    async def drop() -> None:
        if undo.failed:
            log.error(
                "%s: %s could not be undone completely; crio finishes that at its next start",
                intent.subject,
                intent.operation.value,
            )
            return
        state.end(intent.object_id)

    undo.push("the intent record", drop)
