"""The state store on a real directory: durable records, names, lookups, the event hub."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from crio.errors import AlreadyExistsError, InvalidRequestError, NotFoundError
from crio.network import PortMapping
from crio.oci.container import HugepageLimit, Mount, Propagation, Resources
from crio.oci.runtime import NamespaceMode, PodNamespaces
from crio.state import (
    ContainerChange,
    ContainerRecord,
    ContainerState,
    DnsConfig,
    EventHub,
    EventKind,
    SandboxRecord,
    SandboxState,
    StateStore,
    container_name_key,
)

POD_ID = "a" * 64
CTR_ID = "b" * 64


def pod(**changes: object) -> SandboxRecord:
    fields: dict[str, object] = {
        "pod_sandbox_id": POD_ID,
        "name": "web",
        "namespace": "default",
        "uid": "u1",
        "attempt": 0,
        "runtime_handler": "runc",
        "created_at": 1,
        "run_dir": "/run/x",
        "namespaces": PodNamespaces(network="/run/ns/net", shm="/run/x/shm"),
        "port_mappings": (PortMapping(80, 8080, "tcp", "127.0.0.1"),),
        "dns": DnsConfig(("10.0.0.10",), ("svc",), ("ndots:5",)),
        "pid_mode": NamespaceMode.NODE,
        "labels": {"app": "web"},
    }
    fields.update(changes)
    return SandboxRecord(**fields)  # type: ignore[arg-type]


def container(**changes: object) -> ContainerRecord:
    fields: dict[str, object] = {
        "container_id": CTR_ID,
        "pod_sandbox_id": POD_ID,
        "name": "c",
        "attempt": 0,
        "runtime_handler": "runc",
        "created_at": 2,
        "bundle": "/run/b",
        "image": "busybox",
        "mounts": (Mount("/data", "/srv", True, False, Propagation.HOST_TO_CONTAINER),),
        "resources": Resources(cpu_shares=2, hugepage_limits=(HugepageLimit("2MB", 4),)),
    }
    fields.update(changes)
    return ContainerRecord(**fields)  # type: ignore[arg-type]


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def opened(path: Path) -> tuple[StateStore, list[str]]:
    store = StateStore(path)
    problems = await store.open()
    return store, problems


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, _ = await opened(tmp_path)
        await store.save_sandbox(pod())
        await store.save_container(container(state=ContainerState.RUNNING, pid=42))
        again, problems = await opened(tmp_path)
        assert problems == []
        assert again.sandbox(POD_ID) == pod()
        assert again.container(CTR_ID) == container(state=ContainerState.RUNNING, pid=42)
        assert again.containers(POD_ID) == [again.container(CTR_ID)]
        # The names are reserved again from the records.
        with pytest.raises(AlreadyExistsError, match=POD_ID):
            again.reserve_name(pod().name_key, "other")
        key = container_name_key("c", 0, pod())
        with pytest.raises(AlreadyExistsError, match=CTR_ID):
            again.reserve_name(key, "other")

    run(scenario())


def test_removal_is_durable_and_releases_names(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, _ = await opened(tmp_path)
        await store.save_sandbox(pod())
        await store.save_container(container())
        with pytest.raises(InvalidRequestError, match="still has containers"):
            await store.remove_sandbox(POD_ID)
        await store.remove_container(CTR_ID)
        await store.remove_sandbox(POD_ID)
        store.reserve_name(pod().name_key, "new-owner")
        again, _ = await opened(tmp_path)
        assert again.sandboxes() == [] and again.containers() == []
        with pytest.raises(NotFoundError, match=CTR_ID):
            again.container(CTR_ID)

    run(scenario())


def test_corrupt_and_half_written_files(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, _ = await opened(tmp_path)
        await store.save_sandbox(pod())
        (tmp_path / "sandboxes" / ("c" * 64 + ".json")).write_text("{not json")
        (tmp_path / "containers" / ("d" * 64 + ".json")).write_text(json.dumps({"name": "x"}))
        # A write that never reached its rename: the record on disk stands.
        (tmp_path / "sandboxes" / f".{POD_ID}.json.tmp").write_text("{}")
        again, problems = await opened(tmp_path)
        assert again.sandbox(POD_ID) == pod()
        assert len(problems) == 2
        assert any("unreadable" in p and "c" * 64 in p for p in problems)
        assert any("not a container record" in p for p in problems)
        assert (tmp_path / "sandboxes" / ("c" * 64 + ".json.corrupt")).exists()
        assert not (tmp_path / "sandboxes" / f".{POD_ID}.json.tmp").exists()

    run(scenario())


def test_lookup_by_prefix(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, _ = await opened(tmp_path)
        await store.save_sandbox(pod())
        await store.save_sandbox(pod(pod_sandbox_id="ab" + "0" * 62, uid="u2"))
        assert store.sandbox("aaa").pod_sandbox_id == POD_ID
        with pytest.raises(InvalidRequestError, match="ambiguous"):
            store.sandbox("a")
        with pytest.raises(NotFoundError, match="pod sandbox ff not found"):
            store.sandbox("ff")

    run(scenario())


def test_hub_delivers_in_order_and_cuts_off_laggards() -> None:
    async def scenario() -> None:
        hub = EventHub(max_pending=3)
        ctr = container()

        def change(kind: EventKind) -> ContainerChange:
            return ContainerChange(kind, ctr.container_id, 1, pod(), (ctr,))

        stream = hub.subscribe()
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        hub.publish(change(EventKind.CREATED))
        assert (await first).kind is EventKind.CREATED
        for kind in (EventKind.STARTED, EventKind.STOPPED, EventKind.DELETED):
            hub.publish(change(kind))
        hub.publish(change(EventKind.CREATED))  # the fourth pending: cut off
        kinds = [event.kind async for event in stream]
        assert kinds == [EventKind.STARTED, EventKind.STOPPED, EventKind.DELETED]
        assert hub.subscribers == 0

    run(scenario())


def test_sandbox_state_enum_values_are_stable() -> None:
    # These strings are on disk: changing them loses every record.
    assert [s.value for s in SandboxState] == ["ready", "notready"]
    assert [s.value for s in ContainerState] == ["created", "running", "exited", "unknown"]
