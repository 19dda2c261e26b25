"""The state store: pod and container records in memory, each one durable on disk.

Layout under ``[crio] state_dir``::

    sandboxes/ID.json     one SandboxRecord each
    containers/ID.json    one ContainerRecord each
    pending/ID.json       one Intent each: an operation in progress (see intents.py)

Every ``save_*`` and ``remove_*`` returns only once the change is on disk
(temporary file, fsync, rename, fsync of the directory, in a worker thread),
so a handler that awaits it before replying never acknowledges what a crash
could lose. :meth:`StateStore.open` reads everything back at start-up; a
file that cannot be read is moved aside (``*.corrupt``) and reported, never
silently dropped.

Names (``k8s_NAME_NAMESPACE_UID_ATTEMPT``) are reserved in memory for the
life of an object, and rebuilt from the records on open.

``open(readonly=True)`` (``crio check``) reads without changing anything:
problems are reported, nothing is moved aside.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from crio.errors import AlreadyExistsError, InvalidRequestError, NotFoundError, WrongStateError
from crio.state._atomic import remove_durably, write_durably
from crio.state.intents import Intent
from crio.state.locks import PodLock
from crio.state.records import ContainerRecord, SandboxRecord, container_name_key

__all__ = ["StateStore"]

log = logging.getLogger("crio.state")


class StateStore:
    """Records of one crio; safe for concurrent use from one event loop."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._sandboxes: dict[str, SandboxRecord] = {}
        self._containers: dict[str, ContainerRecord] = {}
        self._by_pod: dict[str, set[str]] = {}
        self._names: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pod_locks: dict[str, PodLock] = {}
        self._write_locks: dict[str, asyncio.Lock] = {}
        self._intents: dict[str, Intent] = {}
        self._readonly = False

    # -- opening ----------------------------------------------------------

    async def open(self, readonly: bool = False) -> list[str]:
        """Create the directories and load every record; return the problems found.

        :param readonly: change nothing on disk (unreadable records are
            reported, not moved aside; no directory is created).
        """
        self._readonly = readonly
        return await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> list[str]:
        problems: list[str] = []
        for sub in ("sandboxes", "containers", "pending"):
            if not self._readonly:
                (self.state_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, data in self._read_all(self.state_dir / "sandboxes", problems):
            try:
                pod = SandboxRecord.from_json(data)
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(self._quarantine(path, f"not a sandbox record: {exc}"))
                continue
            self._sandboxes[pod.pod_sandbox_id] = pod
            self._by_pod.setdefault(pod.pod_sandbox_id, set())
            self._names[pod.name_key] = pod.pod_sandbox_id
        for path, data in self._read_all(self.state_dir / "containers", problems):
            try:
                ctr = ContainerRecord.from_json(data)
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(self._quarantine(path, f"not a container record: {exc}"))
                continue
            pod = self._sandboxes.get(ctr.pod_sandbox_id)
            if pod is None:
                problems.append(
                    f"container {ctr.container_id} belongs to unknown pod {ctr.pod_sandbox_id}; "
                    "kept so that it can be removed"
                )
            self._containers[ctr.container_id] = ctr
            self._by_pod.setdefault(ctr.pod_sandbox_id, set()).add(ctr.container_id)
            if pod is not None:
                self._names[container_name_key(ctr.name, ctr.attempt, pod)] = ctr.container_id
        for path, data in self._read_all(self.state_dir / "pending", problems):
            try:
                intent = Intent.from_json(data)
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(self._quarantine(path, f"not an intent record: {exc}"))
                continue
            self._intents[intent.object_id] = intent
        return problems

    def _read_all(
        self, directory: Path, problems: list[str]
    ) -> Iterable[tuple[Path, dict[str, object]]]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                # A temporary file of a write that never finished: the old record stands.
                if self._readonly:
                    problems.append(f"state: {entry.path} is left from an unfinished write")
                else:
                    os.unlink(entry.path)
                continue
            if not entry.name.endswith(".json"):
                continue
            path = Path(entry.path)
            try:
                data = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                problems.append(self._quarantine(path, f"unreadable: {exc}"))
                continue
            if not isinstance(data, dict):
                problems.append(self._quarantine(path, "not a JSON object"))
                continue
            yield path, data

    def _quarantine(self, path: Path, why: str) -> str:
        if self._readonly:
            return f"state record {path} {why}"
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        return f"state record {path} {why}; moved to {aside}"

    # -- sandboxes --------------------------------------------------------

    def sandbox(self, pod_sandbox_id: str) -> SandboxRecord:
        """The pod with this id (or unique id prefix). :raises NotFoundError:"""
        return self._sandboxes[_resolve(self._sandboxes, pod_sandbox_id, "pod sandbox")]

    def sandboxes(self) -> list[SandboxRecord]:
        return list(self._sandboxes.values())

    async def save_sandbox(self, pod: SandboxRecord) -> None:
        """Write ``pod`` durably, then make it the current record."""
        path = self.state_dir / "sandboxes" / f"{pod.pod_sandbox_id}.json"
        await self._write(path, pod.to_json())
        self._sandboxes[pod.pod_sandbox_id] = pod
        self._by_pod.setdefault(pod.pod_sandbox_id, set())
        self._names[pod.name_key] = pod.pod_sandbox_id

    async def remove_sandbox(self, pod_sandbox_id: str) -> None:
        """Forget the pod durably and release its name. Its containers must be gone."""
        if self._by_pod.get(pod_sandbox_id):
            raise InvalidRequestError(
                f"pod sandbox {pod_sandbox_id} still has containers; remove them first"
            )
        path = self.state_dir / "sandboxes" / f"{pod_sandbox_id}.json"
        await self._remove(path)
        pod = self._sandboxes.pop(pod_sandbox_id, None)
        self._by_pod.pop(pod_sandbox_id, None)
        self._locks.pop(pod_sandbox_id, None)
        lock = self._pod_locks.get(pod_sandbox_id)
        if lock is not None and lock.idle:
            del self._pod_locks[pod_sandbox_id]
        if pod is not None:
            self.release_name(pod.name_key, pod_sandbox_id)

    # -- containers -------------------------------------------------------

    def container(self, container_id: str) -> ContainerRecord:
        """The container with this id (or unique id prefix). :raises NotFoundError:"""
        return self._containers[_resolve(self._containers, container_id, "container")]

    def containers(self, pod_sandbox_id: str | None = None) -> list[ContainerRecord]:
        if pod_sandbox_id is None:
            return list(self._containers.values())
        return [self._containers[cid] for cid in self._by_pod.get(pod_sandbox_id, ())]

    async def save_container(self, ctr: ContainerRecord) -> None:
        """Write ``ctr`` durably, then make it the current record."""
        path = self.state_dir / "containers" / f"{ctr.container_id}.json"
        await self._write(path, ctr.to_json())
        self._containers[ctr.container_id] = ctr
        self._by_pod.setdefault(ctr.pod_sandbox_id, set()).add(ctr.container_id)

    async def remove_container(self, container_id: str) -> None:
        """Forget the container durably and release its name."""
        path = self.state_dir / "containers" / f"{container_id}.json"
        await self._remove(path)
        ctr = self._containers.pop(container_id, None)
        self._locks.pop(container_id, None)
        if ctr is None:
            return
        self._by_pod.get(ctr.pod_sandbox_id, set()).discard(container_id)
        pod = self._sandboxes.get(ctr.pod_sandbox_id)
        if pod is not None:
            self.release_name(container_name_key(ctr.name, ctr.attempt, pod), container_id)

    # -- names and locks --------------------------------------------------

    def reserve_name(self, key: str, owner_id: str) -> None:
        """Reserve ``key`` for ``owner_id``. :raises AlreadyExistsError: naming the holder."""
        holder = self._names.get(key)
        if holder is not None and holder != owner_id:
            raise AlreadyExistsError(f"name {key!r} is already reserved by {holder}")
        self._names[key] = owner_id

    def release_name(self, key: str, owner_id: str) -> None:
        if self._names.get(key) == owner_id:
            del self._names[key]

    def lock(self, object_id: str) -> asyncio.Lock:
        """The lock that serialises operations on one container."""
        lock = self._locks.get(object_id)
        if lock is None:
            lock = self._locks[object_id] = asyncio.Lock()
        return lock

    def pod_lock(self, pod_sandbox_id: str) -> PodLock:
        """The lock of one pod: shared by container calls, exclusive for pod-wide ones."""
        lock = self._pod_locks.get(pod_sandbox_id)
        if lock is None:
            lock = self._pod_locks[pod_sandbox_id] = PodLock()
        return lock

    # -- intents ------------------------------------------------------------

    async def begin(self, intent: Intent) -> None:
        """Record durably that ``intent`` is under way, before it touches anything."""
        path = self.state_dir / "pending" / f"{intent.object_id}.json"
        await self._write(path, intent.to_json())
        self._intents[intent.object_id] = intent

    def end(self, object_id: str) -> None:
        """The operation on ``object_id`` is over (done, or undone).

        Not made durable: an intent found again after a crash is checked
        against the records, and one that finished is dropped then.
        """
        self._intents.pop(object_id, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_dir / "pending" / f"{object_id}.json")

    def pending(self) -> list[Intent]:
        """The operations that were under way (after :meth:`open`: when crio stopped)."""
        return list(self._intents.values())

    # -- disk ---------------------------------------------------------------

    async def _write(self, path: Path, data: dict[str, object]) -> None:
        if self._readonly:
            raise WrongStateError(f"the state store at {self.state_dir} is open read-only")
        payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        async with self._write_lock(path):
            await asyncio.to_thread(write_durably, path, payload)

    async def _remove(self, path: Path) -> None:
        if self._readonly:
            raise WrongStateError(f"the state store at {self.state_dir} is open read-only")
        async with self._write_lock(path):
            await asyncio.to_thread(remove_durably, path)
        self._write_locks.pop(str(path), None)

    def _write_lock(self, path: Path) -> asyncio.Lock:
        key = str(path)
        lock = self._write_locks.get(key)
        if lock is None:
            lock = self._write_locks[key] = asyncio.Lock()
        return lock


def _resolve(records: dict[str, object], wanted: str, what: str) -> str:
    if wanted in records:
        return wanted
    if not wanted:
        raise NotFoundError(f"{what} id is empty")
    matches = [key for key in records if key.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InvalidRequestError(f"{what} id prefix {wanted!r} is ambiguous")
    raise NotFoundError(f"{what} {wanted} not found")
