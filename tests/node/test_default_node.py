"""crio as shipped, on a node: default paths shared with podman, exits, restarts, repair.

The tests run in file order on one crio (the module's ``node_run``): each
step leaves the node as the next one expects it, as on a real node.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from crio.api import api_pb2 as api
from support.cri import EventWatch
from support.default_node import RUN_DIR, RUNTIME_ROOTS, NodeRun, crio_made, podman_running
from support.node import HANDLERS

#: Runs until /tmp/die appears in its rootfs, then exits 5.
UNTIL_TOLD = ["sh", "-c", "while [ ! -e /tmp/die ]; do sleep 0.05; done; exit 5"]
#: PID 1's start time: the same process across crio's restarts.
STARTED = ["sh", "-c", "cut -d' ' -f22 /proc/1/stat"]


def _info(run: NodeRun, cid: str) -> dict[str, object]:
    reply = run.client().rt.ContainerStatus(
        api.ContainerStatusRequest(container_id=cid, verbose=True)
    )
    return dict(json.loads(reply.info["info"]))


def _all_podman_running(run: NodeRun) -> None:
    statuses = podman_running(run)
    assert set(statuses.values()) == {"running"}, statuses


def test_exits_are_seen_with_the_default_paths(node_run: NodeRun) -> None:
    run = node_run
    for handler in HANDLERS:
        # One pod on the node's CNI network (whatever network_dir's first config is).
        pod_id = run.run_pod(handler, host_network=handler == "runc")
        before = time.time_ns()
        status = run.exit_seen(pod_id, f"exit-{handler}", 7)
        assert (status.state, status.exit_code, status.reason) == (
            api.CONTAINER_EXITED, 7, "Error"), status  # fmt: skip
        assert before < status.started_at <= status.finished_at <= time.time_ns()
    # The attach directory still holds crio's other directories (they were once taken
    # for stale attach links and removed).
    for name in ("exits", "ns", "version"):
        assert (RUN_DIR / name).exists(), name


def test_stop_pod_sandbox_of_exited_containers_keeps_their_exits(node_run: NodeRun) -> None:
    run = node_run
    pod_id = run.run_pod("crun")
    ended = {code: run.exit_seen(pod_id, f"ends-{code}", code).id for code in (0, 3)}
    run.client().stop_pod(pod_id)
    # Nothing had to be killed or given up on: each kept the exit it was seen with.
    for code, cid in ended.items():
        status = run.client().status(cid)
        reason = "Completed" if code == 0 else "Error"
        assert (status.state, status.exit_code, status.reason) == (
            api.CONTAINER_EXITED, code, reason), status  # fmt: skip
    assert run.client().pod_status(pod_id).state == api.SANDBOX_NOTREADY
    run.client().remove_pod(pod_id)
    run.pods.discard(pod_id)
    run.containers -= set(ended.values())


def test_podman_containers_share_the_runtime_roots_and_survive_crio(node_run: NodeRun) -> None:
    run = node_run
    for podman_id, runtime in run.podman_ids.items():
        assert (Path(f"/run/{runtime}") / podman_id).is_dir(), (runtime, podman_id)
    _all_podman_running(run)
    # And ones started while crio runs.
    for runtime in ("crun", "runc"):
        run.podman_ids[run.podman.run(runtime, run.image)] = runtime
    _all_podman_running(run)


def test_a_sigkilled_crio_restarts_with_its_pods_and_sees_later_exits(node_run: NodeRun) -> None:
    run = node_run
    live: dict[str, tuple[str, str, bytes]] = {}
    for handler in HANDLERS:
        pod_id = run.run_pod(handler)
        doomed = run.create(pod_id, f"doomed-{handler}", UNTIL_TOLD)
        steady = run.create(pod_id, f"steady-{handler}", ["sleep", "3600"])
        live[handler] = (pod_id, doomed, run.client().exec(steady, STARTED).stdout)
        live[f"{handler}-steady"] = (pod_id, steady, run.client().exec(steady, STARTED).stdout)
    rootfs = {h: Path(str(_info(run, cid)["rootfs"])) for h, (_, cid, _) in live.items()}
    assert run.crio.stop(signal.SIGKILL) == -signal.SIGKILL
    run.cri = run.crio.start()
    _all_podman_running(run)
    for key, (pod_id, cid, started) in live.items():
        assert run.client().status(cid).state == api.CONTAINER_RUNNING, key
        if key.endswith("-steady"):
            assert run.client().exec(cid, STARTED).stdout == started  # the same process
        assert list(RUN_DIR.glob(f"ns/*/{pod_id}")), key  # its namespaces are still pinned
    for handler in HANDLERS:
        _, doomed, _ = live[handler]
        with EventWatch(run.client()) as events:
            (rootfs[handler] / "tmp" / "die").write_text("")
            events.wait(doomed, api.CONTAINER_STOPPED_EVENT)
        status = run.client().status(doomed)
        assert (status.state, status.exit_code) == (api.CONTAINER_EXITED, 5), status


def test_check_repair_leaves_podman_and_live_pods_alone(node_run: NodeRun) -> None:
    run = node_run
    assert run.crio.stop() == 0
    run.cri = None
    repaired = run.crio.check("--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    _all_podman_running(run)
    run.cri = run.crio.start()
    running = [c for c in run.client().containers() if c.state == api.CONTAINER_RUNNING]
    assert {c.id for c in running} >= {c for c in run.containers if "steady" in _name(run, c)}
    _all_podman_running(run)


def _name(run: NodeRun, cid: str) -> str:
    return str(run.client().status(cid).metadata.name)


def test_nothing_crio_made_is_left_once_its_pods_are_removed(node_run: NodeRun) -> None:
    run = node_run
    run.remove_pods()
    assert not run.client().pods()
    left = crio_made(run.pods, run.containers)
    assert not any(left.values()), left
    cgroups = [str(h / run.cgroup_root.lstrip("/")) for h in Path("/sys/fs/cgroup").iterdir()
               if list((h / run.cgroup_root.lstrip("/")).glob("pod-*"))]  # fmt: skip
    assert not cgroups, cgroups
    _all_podman_running(run)
    for podman_id, runtime in run.podman_ids.items():
        assert (Path(f"/run/{runtime}") / podman_id).is_dir()
    assert all(root.is_dir() for root in RUNTIME_ROOTS)
