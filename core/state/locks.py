"""Per-object locks: one pod's RPCs are serialised, unrelated pods never wait for each other.

A pod's lock is shared by the RPCs that work on one of its containers
(CreateContainer, StartContainer) and held exclusively by the ones that
change the whole pod (StopPodSandbox, RemovePodSandbox): containers of one
pod are made in parallel, and a pod is never stopped halfway through making
one of its containers. A waiting exclusive holder goes first, so a stream of
container calls cannot keep a pod from being stopped.

Lock order, to stay free of deadlocks: a pod's lock before a container's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["PodLock"]


class PodLock:
    """A readers-writer lock for one event loop, writers first.

    A writer takes the inner lock and then waits for the readers to leave;
    readers pass through the inner lock to enter, so they queue behind a
    writer that holds or waits for it (asyncio.Lock is first come, first
    served). Leaving never awaits, so a cancelled holder cannot wedge the lock.
    """

    def __init__(self) -> None:
        self._readers = 0
        self._gate = asyncio.Lock()
        self._no_readers = asyncio.Event()
        self._no_readers.set()

    @property
    def idle(self) -> bool:
        return not self._readers and not self._gate.locked()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._gate:
            self._readers += 1
            self._no_readers.clear()
        try:
            yield
        finally:
            self._readers -= 1
            if not self._readers:
                self._no_readers.set()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._gate:
            await self._no_readers.wait()
            yield
