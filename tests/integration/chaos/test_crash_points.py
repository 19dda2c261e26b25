"""crio killed at chosen instants inside an RPC, then restarted: nothing acknowledged is lost,
nothing leaked.

Each test holds a real binary (runc, the bridge CNI plugin) in the middle of
a call, kills crio with SIGKILL there, lets the binary finish with crio
gone, and starts crio again. The node fixtures check afterwards that the
test's mounts, namespace pins, cgroups, exit files, veths, leases and
iptables rules are gone.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from crio.api import api_pb2 as api
from support.chaos_env import conmons_of, store_container_ids
from support.cni import CNIEnv
from support.crashpoint import Hold, crash, in_background
from support.cri import container_config, wait_until
from support.node import Node, pause_processes


def test_kill_during_runtime_create_rolls_the_container_back(held_node: Any) -> None:
    node, hold = held_node()
    pod_id = node.cri.run_pod(node.pod(), runtime_handler="runc")
    kept = node.cri.create(pod_id, container_config("kept"), start=True)
    config = container_config("doomed")
    crash(node, hold, "create", lambda: node.cri.create(pod_id, config))
    assert [c.id for c in node.cri.containers()] == [kept]
    assert store_container_ids(node.base) == {kept}
    assert [cid for cid, _ in conmons_of(node.base)] == [kept]
    assert sorted(p.name for p in (node.base / "rt-runc").iterdir()) == [kept]
    assert node.cri.status(kept).state == api.CONTAINER_RUNNING
    # The name is free again, and the pod works on.
    again = node.cri.create(pod_id, container_config("doomed"), start=True)
    assert node.cri.exec(again, ["echo", "ok"]).stdout == b"ok\n"


def test_kill_during_runtime_start_rolls_the_start_forward(held_node: Any) -> None:
    node, hold = held_node()
    pod_id = node.cri.run_pod(node.pod(), runtime_handler="runc")
    cid = node.cri.create(pod_id, container_config("c"))
    crash(node, hold, "start", lambda: node.cri.start(cid))
    status = node.cri.status(cid)
    assert status.state == api.CONTAINER_RUNNING
    assert status.started_at > 0
    assert node.cri.exec(cid, ["echo", "ok"]).stdout == b"ok\n"


def test_kill_during_cni_add_rolls_the_pod_back(cni_node: tuple[Node, CNIEnv, Hold]) -> None:
    node, cni, hold = cni_node
    kept = node.cri.run_pod(node.pod(host_network=False))
    doomed = node.pod(host_network=False)
    crash(node, hold, "ADD", lambda: node.cri.run_pod(doomed))
    assert [p.id for p in node.cri.pods()] == [kept]
    assert len(cni.veths()) == 1 and len(cni.leases()) == 1
    pins = {p.name for p in (node.base / "ns" / "netns").iterdir()}
    assert pins == {kept}
    assert sorted(p.name for p in (node.base / "runroot" / "crio-sandboxes").iterdir()) == [kept]
    # The name is free again.
    assert node.cri.run_pod(doomed)


def test_kill_during_pod_removal_rolls_it_forward(cni_node: tuple[Node, CNIEnv, Hold]) -> None:
    node, cni, hold = cni_node
    pod_id = node.cri.run_pod(node.pod(host_network=False))
    cid = node.cri.create(pod_id, container_config("c"), start=True)
    crash(node, hold, "DEL", lambda: node.cri.remove_pod(pod_id))
    assert node.cri.pods() == [] and node.cri.containers() == []
    assert cni.veths() == [] and cni.leases() == []
    assert conmons_of(node.base) == [] and store_container_ids(node.base) == set()
    assert cid not in {p.name for p in (node.base / "exits").iterdir()}


def test_kill_during_infra_container_create_rolls_the_pod_back(held_node: Any) -> None:
    node, hold = held_node({"drop_infra_ctr": False})  # every pod gets an infra container
    kept = node.cri.run_pod(node.pod(), runtime_handler="runc")
    doomed = node.pod()
    crash(node, hold, "create", lambda: node.cri.run_pod(doomed, runtime_handler="runc"))
    assert [p.id for p in node.cri.pods()] == [kept]
    kept_infra = node.cri.pod_info(kept)["infraContainerId"]
    assert store_container_ids(node.base) == {kept_infra}
    assert [cid for cid, _ in conmons_of(node.base)] == [kept_infra]
    assert node.cri.run_pod(doomed, runtime_handler="runc")


@pytest.mark.parametrize("cni_node", [{"drop_infra_ctr": False}], indirect=True)
def test_kill_after_the_infra_container_while_cni_adds_rolls_the_pod_back(
    cni_node: tuple[Node, CNIEnv, Hold],
) -> None:
    """A bridge pod gets its infra container while CNI runs: a crash once the infra
    container is made and recorded, CNI ADD still held, takes the whole pod back (the
    infra container's record included)."""
    node, cni, hold = cni_node
    kept = node.cri.run_pod(node.pod(host_network=False))
    kept_infra = node.cri.pod_info(kept)["infraContainerId"]
    doomed = node.pod(host_network=False)
    hold.arm("ADD")
    thread = in_background(lambda: node.cri.run_pod(doomed))
    hold.wait_reached()
    records = node.base / "state" / "containers"
    wait_until(lambda: len(list(records.iterdir())) == 2, what="the infra record")

    def after_kill() -> None:
        hold.release()
        thread.join(30)

    node.restart(signal.SIGKILL, between=after_kill)
    assert [p.id for p in node.cri.pods()] == [kept]
    assert node.cri.containers() == [] and [r.stem for r in records.iterdir()] == [kept_infra]
    assert store_container_ids(node.base) == {kept_infra}
    assert [cid for cid, _ in conmons_of(node.base)] == [kept_infra]
    assert len(cni.veths()) == 1 and len(cni.leases()) == 1
    assert node.cri.run_pod(doomed)


def test_kill_after_the_pause_process_while_cni_adds_rolls_the_pod_back(
    cni_node: tuple[Node, CNIEnv, Hold],
) -> None:
    """A bridge pod with a shared PID namespace gets its pause process while CNI runs: a
    crash once it runs, CNI ADD still held, takes the whole pod back, pause process
    included (killed on the evidence of its record and mark)."""
    node, cni, hold = cni_node
    kept = node.cri.run_pod(node.pod(host_network=False, pid=api.POD))
    (kept_pause,) = pause_processes(node.base)
    doomed = node.pod(host_network=False, pid=api.POD)
    hold.arm("ADD")
    thread = in_background(lambda: node.cri.run_pod(doomed))
    hold.wait_reached()
    wait_until(lambda: len(pause_processes(node.base)) == 2, what="the pause process")

    def after_kill() -> None:
        hold.release()
        thread.join(30)

    node.restart(signal.SIGKILL, between=after_kill)
    assert [p.id for p in node.cri.pods()] == [kept]
    assert list(pause_processes(node.base)) == [kept_pause]
    assert {p.name for p in (node.base / "ns" / "pidns").iterdir()} == {kept}
    assert len(cni.veths()) == 1 and len(cni.leases()) == 1
    assert node.cri.run_pod(doomed)
