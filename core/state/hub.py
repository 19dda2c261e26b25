"""The container event hub: changes published once recorded, for GetContainerEvents.

Each subscriber gets its own bounded queue. A subscriber that falls behind
by more than ``max_pending`` events is cut off (its stream ends) rather than
letting memory grow or slowing the publishers; the kubelet then falls back
to relisting, as it does after any stream error.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from crio.state.records import ContainerRecord, SandboxRecord

__all__ = ["ContainerChange", "EventHub", "EventKind"]

log = logging.getLogger("crio.state")


class EventKind(enum.Enum):
    """CRI ``ContainerEventType``."""

    CREATED = 0
    STARTED = 1
    STOPPED = 2
    DELETED = 3


@dataclass(frozen=True, slots=True)
class ContainerChange:
    """One event with the records as they were when it happened."""

    kind: EventKind
    container_id: str
    created_at: int
    sandbox: SandboxRecord | None
    containers: tuple[ContainerRecord, ...]


_END = object()


class EventHub:
    def __init__(self, max_pending: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[object]] = set()
        self._max_pending = max_pending

    def publish(self, change: ContainerChange) -> None:
        """Hand ``change`` to every subscriber; never blocks."""
        for queue in list(self._subscribers):
            if queue.qsize() >= self._max_pending:
                log.warning("a container event subscriber fell behind; ending its stream")
                self._subscribers.discard(queue)
                queue.put_nowait(_END)
                continue
            queue.put_nowait(change)

    async def subscribe(self) -> AsyncIterator[ContainerChange]:
        """Every change published from now on, until the caller stops or falls behind."""
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                assert isinstance(item, ContainerChange)
                yield item
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """End every subscriber's stream (crio is stopping)."""
        for queue in list(self._subscribers):
            queue.put_nowait(_END)
        self._subscribers.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
