"""ListContainers from records on a real state store: filters, and the wire cache's freshness."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from crio import config
from crio.api import api_pb2 as api
from crio.plugins import Plugins
from crio.server import _cri_out
from crio.server.container_list import list_containers
from crio.server.deps import Deps
from crio.state import ContainerRecord, ContainerState, SandboxRecord, StateStore


def _records() -> tuple[SandboxRecord, list[ContainerRecord]]:
    pod = SandboxRecord("p" * 64, "web", "ns", "u", 0, "runc", 1, "/run/p")
    ctrs = [
        ContainerRecord(f"{i:x}" * 64, pod.pod_sandbox_id, f"c{i}", 0, "runc", 10 - i, "/b",
                        "busybox", labels={"n": str(i % 2)}, annotations={"a": "x" * 300})
        for i in range(1, 6)
    ]  # fmt: skip
    ctrs.append(dataclasses.replace(ctrs[0], container_id="9" * 64, name="infra", infra=True))
    return pod, ctrs


def test_filters_and_a_fresh_answer_after_each_change(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = StateStore(tmp_path)
        await store.open()
        pod, ctrs = _records()
        await store.save_sandbox(pod)
        for ctr in ctrs:
            await store.save_container(ctr)
        deps = Deps(config=config.Config(), plugins=Plugins(), runtimes={}, network=None,
                    state=store)  # fmt: skip

        async def listed(**flt: object) -> list[api.Container]:
            reply = await list_containers(
                deps, api.ListContainersRequest(filter=api.ContainerFilter(**flt))
            )
            return list(reply.containers)

        everything = await listed()
        visible = sorted((c for c in ctrs if not c.infra), key=lambda c: c.created_at)
        assert everything == [_cri_out.container(c) for c in visible]
        assert [c.id for c in await listed(label_selector={"n": "1"})] == [
            c.container_id for c in visible if c.labels["n"] == "1"
        ]
        assert [c.id for c in await listed(id="3")] == ["3" * 64]
        assert await listed(pod_sandbox_id="q" * 64) == []
        running = api.ContainerStateValue(state=api.CONTAINER_RUNNING)
        assert await listed(state=running) == []
        await store.save_container(dataclasses.replace(ctrs[1], state=ContainerState.RUNNING))
        [now_running] = await listed(state=running)
        assert now_running.id == ctrs[1].container_id
        assert now_running.state == api.CONTAINER_RUNNING  # not a stale cached message
        await store.remove_container(ctrs[2].container_id)
        assert ctrs[2].container_id not in [c.id for c in await listed()]

    asyncio.run(scenario())
