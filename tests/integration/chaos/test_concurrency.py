"""Many calls at once: each succeeds or fails cleanly, names never clash, one slow stop
blocks only its own container."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from crio.api import api_pb2 as api
from support.cri import EventWatch, container_config, wait_until
from support.node import Node

PODS = 100  # each requested twice: 200 RunPodSandbox calls, then 200 CreateContainer


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()


def test_two_hundred_parallel_calls_succeed_or_fail_cleanly(node: Node) -> None:
    configs = [node.pod() for _ in range(PODS)]
    handlers = ["runc", "crun"]
    with concurrent.futures.ThreadPoolExecutor(2 * PODS) as pool:
        runs = [
            pool.submit(
                _outcome,
                lambda c=config, h=handlers[i % 2]: (
                    node.cri.rt.RunPodSandbox(
                        api.RunPodSandboxRequest(config=c, runtime_handler=h), timeout=300
                    ).pod_sandbox_id
                ),
            )
            for i, config in enumerate(configs + configs)
        ]
        pod_results = [future.result() for future in runs]
        assert Counter(kind for kind, _ in pod_results) == {"ok": PODS, "ALREADY_EXISTS": PODS}
        pod_ids = [value for kind, value in pod_results if kind == "ok"]
        creates = [
            pool.submit(
                _outcome,
                lambda p=pod_id: (
                    node.cri.rt.CreateContainer(
                        api.CreateContainerRequest(
                            pod_sandbox_id=p, config=container_config("c", ["sleep", "3600"])
                        ),
                        timeout=300,
                    ).container_id
                ),
            )
            for pod_id in pod_ids + pod_ids
        ]
        ctr_results = [future.result() for future in creates]
        assert Counter(kind for kind, _ in ctr_results) == {"ok": PODS, "ALREADY_EXISTS": PODS}
        ctr_ids = [value for kind, value in ctr_results if kind == "ok"]
        starts = [
            pool.submit(
                _outcome,
                lambda c=cid: node.cri.rt.StartContainer(
                    api.StartContainerRequest(container_id=c), timeout=300
                ),
            )
            for cid in ctr_ids + ctr_ids[: PODS // 2]  # half of them started twice
        ]
        start_results = Counter(future.result()[0] for future in starts)
    assert start_results == {"ok": PODS, "FAILED_PRECONDITION": PODS // 2}
    pods = node.cri.pods()
    assert len(pods) == PODS
    assert len({(p.metadata.name, p.metadata.uid) for p in pods}) == PODS
    containers = node.cri.containers()
    assert sorted(c.id for c in containers) == sorted(ctr_ids)
    assert {c.state for c in containers} == {api.CONTAINER_RUNNING}
    assert "Traceback" not in node.crio.log_text()


#: Notes the stop signal in /tmp/termed and goes on running.
STUBBORN = ["sh", "-c", "trap 'touch /tmp/termed' TERM; while :; do sleep 1; done"]


def test_a_stop_waiting_on_a_stubborn_container_blocks_only_that_container(node: Node) -> None:
    pod = node.cri.run_pod(node.pod(), runtime_handler="runc")
    stubborn = node.cri.create(pod, container_config("stubborn", STUBBORN), start=True)
    info = json.loads(
        node.cri.rt.ContainerStatus(
            api.ContainerStatusRequest(container_id=stubborn, verbose=True)
        ).info["info"]
    )
    termed = Path(info["rootfs"]) / "tmp" / "termed"
    with EventWatch(node.cri) as events, concurrent.futures.ThreadPoolExecutor(4) as pool:
        stopping = pool.submit(node.cri.rt.StopContainer,
            api.StopContainerRequest(container_id=stubborn, timeout=3600))  # fmt: skip
        wait_until(termed.exists, what="the stop signal reached the container")
        removing = pool.submit(node.cri.rt.RemoveContainer,
            api.RemoveContainerRequest(container_id=stubborn))  # fmt: skip
        # Meanwhile: the stubborn container answers, its pod takes another container,
        # and another pod goes through its whole life.
        assert node.cri.status(stubborn).state == api.CONTAINER_RUNNING
        sibling = node.cri.create(pod, container_config("sibling"), start=True)
        assert node.cri.exec(sibling, ["echo", "ok"]).stdout == b"ok\n"
        other = node.cri.run_pod(node.pod(), runtime_handler="crun")
        cid = node.cri.create(other, container_config("c"), start=True)
        assert node.cri.exec(cid, ["echo", "ok"]).stdout == b"ok\n"
        node.cri.stop(cid)
        node.cri.remove(cid)
        node.cri.stop_pod(other)
        node.cri.remove_pod(other)
        # Both calls on the stubborn container still wait: the stop for its timeout,
        # the removal behind the stop.
        assert not stopping.done() and not removing.done()
        os.kill(int(info["pid"]), signal.SIGKILL)
        stopping.result(timeout=60)
        removing.result(timeout=60)
        # Stopped, then removed: in the order the calls were serialised.
        events.wait(stubborn, api.CONTAINER_STOPPED_EVENT)
        events.wait(stubborn, api.CONTAINER_DELETED_EVENT)
    assert [c.id for c in node.cri.containers()] == [sibling]
