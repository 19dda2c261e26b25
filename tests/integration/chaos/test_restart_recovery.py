"""What crio finds when it comes back: exits while it was down, lost monitors, orphans, old URLs.

``crio check`` lists what a restart would repair without changing anything;
``crio check --repair`` repairs it with crio stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

import crio
from crio.api import api_pb2 as api
from support.chaos_env import conmons_of, store_container_ids
from support.cri import EventWatch, container_config, wait_until
from support.node import Node, start_node, stop_node
from support.spdy_client import HandshakeError, exec_session

#: Runs until /tmp/die appears in its rootfs, then exits 7.
UNTIL_TOLD = ["sh", "-c", "while [ ! -e /tmp/die ]; do sleep 0.05; done; exit 7"]


def _rootfs(node: Node, cid: str) -> Path:
    reply = node.cri.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True))
    return Path(json.loads(reply.info["info"])["rootfs"])


def _pid(node: Node, cid: str) -> int:
    reply = node.cri.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True))
    return int(json.loads(reply.info["info"])["pid"])


def _bundle(node: Node, cid: str) -> Path:
    reply = node.cri.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True))
    return Path(json.loads(reply.info["info"])["bundle"])


def _check(node: Node, *args: str) -> tuple[int, str]:
    result = subprocess.run(node.crio.command("check", *args), capture_output=True, text=True)
    return result.returncode, result.stdout


def test_exit_while_down_gives_exit_code_and_finish_time(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler="runc")
    cid = node.cri.create(pod_id, container_config("c", UNTIL_TOLD), start=True)
    exit_file = node.base / "exits" / cid
    rootfs = _rootfs(node, cid)

    def exit_while_down() -> None:
        (rootfs / "tmp" / "die").write_text("")
        wait_until(exit_file.exists, what="conmon wrote the exit file")

    node.restart(signal.SIGKILL, between=exit_while_down)
    status = node.cri.status(cid)
    assert (status.state, status.exit_code, status.reason) == (api.CONTAINER_EXITED, 7, "Error")
    assert status.finished_at == exit_file.stat().st_mtime_ns
    assert status.started_at < status.finished_at


def test_lost_monitor_is_reported_and_running_containers_are_left_alone(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler="runc")
    survivor = node.cri.create(pod_id, container_config("survivor", UNTIL_TOLD), start=True)
    gone = node.cri.create(pod_id, container_config("gone", UNTIL_TOLD), start=True)
    survivor_pid, gone_pid = _pid(node, survivor), _pid(node, gone)
    monitors = dict(conmons_of(node.base))
    rootfs = _rootfs(node, survivor)

    def lose_monitors() -> None:
        # Both monitors die; one container goes with its monitor, the other runs on.
        for cid in (survivor, gone):
            os.kill(monitors[cid], signal.SIGKILL)
        os.kill(gone_pid, signal.SIGKILL)
        wait_until(lambda: not conmons_of(node.base), what="the monitors are gone")

    node.restart(signal.SIGKILL, between=lose_monitors)
    status = node.cri.status(gone)
    assert (status.state, status.reason) == (api.CONTAINER_EXITED, "ContainerLost")
    assert "conmon" in status.message and status.finished_at > 0
    assert node.cri.status(survivor).state == api.CONTAINER_RUNNING
    assert _pid(node, survivor) == survivor_pid  # the same process, untouched
    assert f"container {survivor}: conmon is gone" in node.crio.log_text()
    with EventWatch(node.cri) as events:
        (rootfs / "tmp" / "die").write_text("")
        events.wait(survivor, api.CONTAINER_STOPPED_EVENT)
    status = node.cri.status(survivor)
    assert (status.state, status.reason) == (api.CONTAINER_EXITED, "ContainerLost")


def test_a_monitor_pid_taken_by_another_process_is_not_a_monitor(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler="runc")
    cid = node.cri.create(pod_id, container_config("c", UNTIL_TOLD), start=True)
    rootfs = _rootfs(node, cid)
    bundle_pidfile = _bundle(node, cid) / "conmon-pidfile"
    monitor = dict(conmons_of(node.base))[cid]
    stranger = subprocess.Popen(["sleep", "300"])
    try:

        def monitor_dies_and_its_pid_is_reused() -> None:
            os.kill(monitor, signal.SIGKILL)
            wait_until(lambda: not conmons_of(node.base), what="the monitor is gone")
            bundle_pidfile.write_text(str(stranger.pid))

        node.restart(signal.SIGKILL, between=monitor_dies_and_its_pid_is_reused)
        assert f"container {cid}: conmon is gone" in node.crio.log_text()
        with EventWatch(node.cri) as events:
            (rootfs / "tmp" / "die").write_text("")
            # Taken for the monitor, the stranger would hide the exit: no event would come.
            events.wait(cid, api.CONTAINER_STOPPED_EVENT)
        assert node.cri.status(cid).state == api.CONTAINER_EXITED
        node.cri.rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_streaming_urls_do_not_outlive_crio() -> None:
    node = start_node({"crio.api": {"stream_port": _free_port()}})
    try:
        pod_id = node.cri.run_pod(node.pod(), runtime_handler="runc")
        cid = node.cri.create(pod_id, container_config("c"), start=True)
        request = api.ExecRequest(container_id=cid, cmd=["true"], stdout=True)
        url = node.cri.rt.Exec(request).url
        node.restart(signal.SIGKILL)  # the same port again, a new server
        with pytest.raises(HandshakeError) as refused:
            asyncio.run(exec_session(url))
        assert refused.value.status == 404
        assert asyncio.run(exec_session(node.cri.rt.Exec(request).url)).exit_code == 0
    finally:
        stop_node(node)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_reports_orphans_and_repair_releases_them(node: Node) -> None:
    kept_pod = node.cri.run_pod(node.pod(), runtime_handler="runc")
    kept = node.cri.create(kept_pod, container_config("kept"), start=True)
    lost_pod = node.cri.run_pod(node.pod(), runtime_handler="crun")
    lost = node.cri.create(lost_pod, container_config("lost"), start=True)
    assert _check(node) == (0, "crio check: 0 problem(s)\n")
    refused = subprocess.run(node.crio.command("check", "--repair"), capture_output=True, text=True)
    assert refused.returncode == 1 and "stop it before --repair" in refused.stderr
    node.crio.stop()
    # The records of one pod and its container are lost; what they named stays behind.
    (node.base / "state" / "containers" / f"{lost}.json").unlink()
    (node.base / "state" / "sandboxes" / f"{lost_pod}.json").unlink()
    # And a write of the CNI cache was killed before its rename.
    half_written = node.base / "runroot" / "crio-net" / "results" / f".{lost_pod}-eth0.json.tmp"
    half_written.write_text('{"format": "crio-cni')
    code, report = _check(node)
    assert code == 1, report
    for expected in (
        f"conmon {dict(conmons_of(node.base))[lost]} (the monitor of container {lost}): "
        f"container {lost} has no record",
        f"runtime state {node.base}/rt-crun/{lost}: container {lost} has no record",
        f"store container {lost}",
        f"pinned namespace {node.base}/ns/ipcns/{lost_pod}: pod sandbox {lost_pod} has no record",
        f"pod run directory {node.base}/runroot/crio-sandboxes/{lost_pod}: pod sandbox",
        f"CNI cache file {half_written} was left half-written by a crash",
    ):
        assert expected in report, report
    assert kept not in report and kept_pod not in report
    assert {cid for cid, _ in conmons_of(node.base)} == {kept, lost}  # nothing changed
    code, report = _check(node, "--repair")
    assert code == 0 and "crio check: 0 problem(s)" in report, report
    assert [cid for cid, _ in conmons_of(node.base)] == [kept]
    assert store_container_ids(node.base) == {kept}
    assert not (node.base / "runroot" / "crio-sandboxes" / lost_pod).exists()
    assert not (node.base / "ns" / "ipcns" / lost_pod).exists()
    assert not half_written.exists()
    node.restart()
    assert [c.id for c in node.cri.containers()] == [kept]
    assert node.cri.status(kept).state == api.CONTAINER_RUNNING


def test_first_start_since_boot_and_a_new_version_are_logged(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler="runc")
    node.cri.create(pod_id, container_config("c", UNTIL_TOLD), start=True)
    version_file = node.base / "version"
    assert version_file.read_text() == f"{crio.__version__}\n"

    node.restart(signal.SIGTERM, between=version_file.unlink)  # what a boot does to /run
    assert (
        f"first start since the node booted (no {version_file}): 1 pod sandbox(es) and "
        "1 container(s) were recorded before it"
    ) in node.crio.log_text()
    assert version_file.read_text() == f"{crio.__version__}\n"

    node.restart(signal.SIGTERM, between=lambda: version_file.write_text("0.0.1\n"))
    assert f"crio {crio.__version__} takes over from crio 0.0.1" in node.crio.log_text()
    assert version_file.read_text() == f"{crio.__version__}\n"
    assert (
        node.cri.rt.PodSandboxStatus(
            api.PodSandboxStatusRequest(pod_sandbox_id=pod_id)
        ).status.state
        == api.SANDBOX_READY
    )


def test_the_runtime_pidfile_is_believed_only_for_a_process_in_the_container_cgroup(
    node: Node,
) -> None:
    """crio killed before it noted the PIDs: runc's pidfile is read, and checked."""
    pod_id = node.cri.run_pod(node.pod(), runtime_handler="runc")
    kept = node.cri.create(pod_id, container_config("kept", UNTIL_TOLD), start=True)
    taken = node.cri.create(pod_id, container_config("taken", UNTIL_TOLD), start=True)
    kept_pid, taken_pid = _pid(node, kept), _pid(node, taken)
    bundle_of = {cid: _bundle(node, cid) for cid in (kept, taken)}
    stranger = subprocess.Popen(["sleep", "300"])
    try:

        def forget_pids_and_lose_one_container() -> None:
            for cid in (kept, taken):
                noted = bundle_of[cid] / "runc.json"
                record = json.loads(noted.read_text())
                noted.write_text(json.dumps({**record, "pid": 0, "pid_start": 0}))
            os.kill(dict(conmons_of(node.base))[taken], signal.SIGKILL)
            os.kill(taken_pid, signal.SIGKILL)
            wait_until(lambda: len(conmons_of(node.base)) == 1, what="one monitor is gone")
            (bundle_of[taken] / "pidfile").write_text(str(stranger.pid))

        node.restart(signal.SIGKILL, between=forget_pids_and_lose_one_container)
        assert node.cri.status(kept).state == api.CONTAINER_RUNNING
        assert _pid(node, kept) == kept_pid
        status = node.cri.status(taken)
        assert (status.state, status.reason) == (api.CONTAINER_EXITED, "ContainerLost")
        node.cri.rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()
