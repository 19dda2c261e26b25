"""Intent records on a real directory, read-only opening, and the per-pod readers-writer lock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from crio.errors import WrongStateError
from crio.state import ContainerRecord, Intent, Operation, PodLock, SandboxRecord, StateStore

POD = SandboxRecord(
    pod_sandbox_id="a" * 64, name="web", namespace="ns", uid="u", attempt=0,
    runtime_handler="runc", created_at=1, run_dir="/run/pods/a",
)  # fmt: skip
CTR = ContainerRecord(
    container_id="b" * 64, pod_sandbox_id="a" * 64, name="c", attempt=0,
    runtime_handler="runc", created_at=2, bundle="/run/b", image="busybox",
)  # fmt: skip


def test_intents_survive_a_crash_and_end_without_a_trace(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = StateStore(tmp_path)
        assert await store.open() == []
        await store.begin(Intent(Operation.RUN_POD_SANDBOX, sandbox=POD))
        await store.begin(Intent(Operation.CREATE_CONTAINER, container=CTR))
        # "Crash": a new store reads what is on disk.
        again = StateStore(tmp_path)
        assert await again.open() == []
        pending = {i.object_id: i for i in again.pending()}
        assert pending[POD.pod_sandbox_id] == Intent(Operation.RUN_POD_SANDBOX, sandbox=POD)
        assert pending[CTR.container_id].container == CTR
        assert pending[CTR.container_id].subject == f"container {CTR.container_id}"
        again.end(POD.pod_sandbox_id)
        again.end(POD.pod_sandbox_id)  # twice is fine
        assert [i.object_id for i in again.pending()] == [CTR.container_id]
        assert sorted(p.name for p in (tmp_path / "pending").iterdir()) == [
            f"{CTR.container_id}.json"
        ]

    asyncio.run(scenario())


def test_an_intent_names_exactly_one_object() -> None:
    with pytest.raises(ValueError):
        Intent(Operation.REMOVE_CONTAINER)
    with pytest.raises(ValueError):
        Intent(Operation.REMOVE_CONTAINER, sandbox=POD, container=CTR)
    assert Operation.CREATE_CONTAINER.creates and not Operation.REMOVE_POD_SANDBOX.creates


def test_readonly_open_reports_and_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = StateStore(tmp_path)
        await store.open()
        await store.save_sandbox(POD)
        (tmp_path / "pending" / "broken.json").write_text("{not json")
        (tmp_path / "sandboxes" / ".left.json.tmp").write_text("{}")
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        readonly = StateStore(tmp_path)
        problems = await readonly.open(readonly=True)
        assert any("broken.json unreadable" in p for p in problems), problems
        assert any("unfinished write" in p for p in problems), problems
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before
        assert [p.pod_sandbox_id for p in readonly.sandboxes()] == [POD.pod_sandbox_id]
        with pytest.raises(WrongStateError):
            await readonly.save_sandbox(POD)
        with pytest.raises(WrongStateError):
            await readonly.begin(Intent(Operation.REMOVE_POD_SANDBOX, sandbox=POD))
        # Opened for writing, the same problems are moved aside.
        writable = StateStore(tmp_path)
        assert len(await writable.open()) == 1
        assert (tmp_path / "pending" / "broken.json.corrupt").exists()
        assert not (tmp_path / "sandboxes" / ".left.json.tmp").exists()
        assert json.loads((tmp_path / "sandboxes" / f"{POD.pod_sandbox_id}.json").read_text())

    asyncio.run(scenario())


def test_pod_lock_shares_between_readers_and_excludes_a_writer() -> None:
    async def scenario() -> list[str]:
        lock = PodLock()
        order: list[str] = []
        first_in = asyncio.Event()
        release = asyncio.Event()

        async def reader(name: str, hold: asyncio.Event | None = None) -> None:
            async with lock.shared():
                order.append(f"{name} in")
                first_in.set()
                if hold is not None:
                    await hold.wait()
                order.append(f"{name} out")

        async def writer() -> None:
            async with lock.exclusive():
                order.append("writer in")
                order.append("writer out")

        r1 = asyncio.create_task(reader("r1", release))
        await first_in.wait()
        r2 = asyncio.create_task(reader("r2", release))  # shares with r1
        await asyncio.sleep(0)
        w = asyncio.create_task(writer())
        await asyncio.sleep(0)
        r3 = asyncio.create_task(reader("r3"))  # behind the waiting writer
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == ["r1 in", "r2 in"] and not lock.idle
        release.set()
        await asyncio.gather(r1, r2, w, r3)
        assert lock.idle
        return order

    order = asyncio.run(scenario())
    assert order.index("writer out") < order.index("r3 in")
    assert order.index("r1 out") < order.index("writer in")


def test_a_cancelled_waiter_leaves_the_pod_lock_usable() -> None:
    async def scenario() -> None:
        lock = PodLock()
        inside = asyncio.Event()
        done = asyncio.Event()

        async def hold() -> None:
            async with lock.shared():
                inside.set()
                await done.wait()

        holder = asyncio.create_task(hold())
        await inside.wait()
        waiting = asyncio.create_task(lock.exclusive().__aenter__())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        done.set()
        await holder
        async with lock.exclusive():
            pass
        async with lock.shared():
            pass
        assert lock.idle

    asyncio.run(scenario())
