"""Pods whose containers share a PID namespace: crio's own pause process holds it (pause.py).

No infra container: a static catatonit started by crio, in an empty read-only
root of its own, unprivileged and without capabilities. What a container of
the pod can see of it through ``/proc/1`` must show nothing of the host; it
lives through a crash of crio, is found again, and dies with its pod; crio's
start-up kills one no record names only on crio's own evidence.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio.api import api_pb2 as api
from crio_plugins.runtime_runc import pause
from crio_plugins.runtime_runc.cgroups import Hierarchies
from support.chaos_env import crio_check
from support.cri import container_config
from support.node import HANDLERS, Node, pause_processes, start_node, stop_node

CATATONIT = "/usr/bin/catatonit"
if not pause.is_static_executable(CATATONIT):
    pytest.skip(f"{CATATONIT} (a static catatonit) is not installed", allow_module_level=True)

SHARED = api.NamespaceOption(pid=api.POD)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    started = start_node(None)
    started.use_loopback_network()  # pods of their own network namespace, no bridge
    try:
        yield started
    finally:
        stop_node(started)


def _shared(**fields: object) -> api.LinuxContainerSecurityContext:
    return api.LinuxContainerSecurityContext(namespace_options=SHARED, **fields)  # type: ignore[arg-type]


def _sh(node: Node, cid: str, script: str) -> tuple[int, str]:
    reply = node.cri.exec(cid, ["sh", "-c", script])
    return reply.exit_code, (reply.stdout + reply.stderr).decode()


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@pytest.mark.parametrize("handler", HANDLERS)
def test_pid_1_of_a_shared_pod_shows_nothing_of_the_host(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(pid=api.POD, privileged=True), runtime_handler=handler)
    info = node.cri.pod_info(pod_id)
    assert info["infraContainerId"] == ""  # no infra container: a pause process
    assert info["namespaces"]["pid"] == str(node.base / "ns" / "pidns" / pod_id)
    plain = node.cri.create(pod_id, container_config("plain", security=_shared()), start=True)
    pause_user = _shared(
        run_as_user=api.Int64Value(value=65535), run_as_group=api.Int64Value(value=65535)
    )
    same_uid = node.cri.create(pod_id, container_config("uid", security=pause_user), start=True)
    privileged = node.cri.create(
        pod_id, container_config("privileged", security=_shared(privileged=True)), start=True
    )
    assert node.cri.exec(plain, ["cat", "/proc/1/cmdline"]).stdout == b"/pause\0-P\0"
    status = _status(node.cri.exec(plain, ["cat", "/proc/1/status"]).stdout.decode())
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"  # a filter of its own
    assert status["Uid"].split() == ["65535"] * 4 and status["Gid"].split() == ["65535"] * 4
    assert status["Groups"].strip() == ""
    # A root container without CAP_SYS_PTRACE may not look inside at all.
    code, _ = _sh(node, plain, "ls /proc/1/root/")
    assert code != 0
    # Its own uid and gid, and a privileged container, may: there is nothing to see.
    for cid in (same_uid, privileged):
        assert _sh(node, cid, "ls -a /proc/1/root/ /proc/1/cwd/") == (
            0, "/proc/1/cwd/:\n.\n..\n\n/proc/1/root/:\n.\n..\n")  # fmt: skip
        assert _sh(node, cid, "wc -c < /proc/1/environ") == (0, "0\n")
        assert _sh(node, cid, "ls /proc/1/fd/") == (0, "0\n")
        assert _sh(node, cid, "readlink /proc/1/fd/0") == (0, "anon_inode:[signalfd]\n")
        code, mounts = _sh(node, cid, "cat /proc/1/mountinfo")
        assert code == 0 and len(mounts.splitlines()) == 1, mounts
        assert " / / ro," in mounts and f" - tmpfs crio-pause:{node.base}/ns/pidns/" in mounts
    code, text = _sh(node, privileged, "touch /proc/1/root/x")
    assert code != 0 and "Read-only file system" in text
    # The containers share the namespace: each sees the others' processes.
    assert "sleep 3600" in _sh(node, plain, "ps -o args")[1]
    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)
    assert pause_processes(node.base) == {}


def test_the_pause_process_lives_through_a_crash_and_dies_with_its_pod(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod(pid=api.POD, host_network=False), runtime_handler="runc")
    first = node.cri.create(pod_id, container_config("first", security=_shared()), start=True)
    (pid,) = pause_processes(node.base)
    node.restart(signal.SIGKILL)
    # The same process, found again: the pod's containers still share it.
    assert list(pause_processes(node.base)) == [pid]
    second = node.cri.create(
        pod_id, container_config("second", ["sleep", "3601"], security=_shared()), start=True
    )
    assert "sleep 3601" in _sh(node, first, "ps -o args")[1]
    assert node.cri.exec(second, ["cat", "/proc/1/cmdline"]).stdout == b"/pause\0-P\0"
    node.restart(signal.SIGTERM)  # a clean stop leaves it running too
    assert list(pause_processes(node.base)) == [pid]
    node.cri.stop_pod(pod_id)
    assert pause_processes(node.base) == {}  # killed with the pod, its containers with it
    assert {c.state for c in node.cri.containers(pod_sandbox_id=pod_id)} == {api.CONTAINER_EXITED}
    node.cri.remove_pod(pod_id)
    assert not (node.base / "ns" / "pidns" / pod_id).exists()


def test_a_pod_whose_pause_process_ended_while_crio_was_down_comes_back_notready(
    node: Node,
) -> None:
    """Its PID namespace can hold no new process: the kubelet must see the pod dead
    (and make it again) rather than create containers that runc cannot start."""
    pod_id = node.cri.run_pod(node.pod(pid=api.POD), runtime_handler="runc")
    cid = node.cri.create(pod_id, container_config("c", security=_shared()), start=True)
    (pid,) = pause_processes(node.base)
    other = node.cri.run_pod(node.pod(pid=api.POD), runtime_handler="runc")
    node.restart(signal.SIGKILL, between=lambda: os.kill(pid, signal.SIGKILL))
    assert node.cri.pod_status(pod_id).state == api.SANDBOX_NOTREADY
    assert node.cri.pod_status(other).state == api.SANDBOX_READY  # its pause still runs
    (ctr,) = node.cri.containers(pod_sandbox_id=pod_id)
    assert ctr.id == cid and ctr.state == api.CONTAINER_EXITED
    assert f"pod sandbox {pod_id}: its pause process" in node.crio.log_text()
    for pod in (pod_id, other):
        node.cri.stop_pod(pod)
        node.cri.remove_pod(pod)
    assert pause_processes(node.base) == {}
    assert not (node.base / "ns" / "pidns" / pod_id).exists()


def _start_pause(namespaces_dir: Path, run_dir: Path, cgroup: str) -> pause.PauseProcess:
    """A real pause process, as crio starts one, that no record of any crio names."""
    pod_id = secrets.token_hex(32)
    run_dir.mkdir(parents=True)

    async def start() -> pause.PauseProcess:
        spec = pause.PauseSpec(pod_id, CATATONIT, namespaces_dir / "pidns" / pod_id, run_dir,
                               f"{cgroup}/crio-{pod_id}")  # fmt: skip
        watch = await pause.start(spec, Hierarchies.from_host())
        watch.close()  # as if the crio that made it was killed
        return watch.process

    return asyncio.run(start())


def _reap(pid: int) -> None:
    """This test process is their parent: collect what crio killed."""
    os.waitpid(pid, 0)


def test_start_up_kills_only_its_own_unrecorded_pause_processes(node: Node, tmp_path: Path) -> None:
    """What a crash between the start of a pause process and the records leaves (a pod id
    no record names) is killed at the next start; another crio's is left alone."""
    kept = node.cri.run_pod(node.pod(pid=api.POD), runtime_handler="runc")
    cgroup = f"{node.cgroup_root}/pod-lost"
    lost = _start_pause(node.base / "ns", tmp_path / "lost", cgroup)
    foreign = _start_pause(tmp_path / "other-crio-ns", tmp_path / "foreign", cgroup)
    try:
        code, report = crio_check(node.crio)
        assert code != 0 and f"pause process {lost.pid} (pod sandbox" in report
        assert str(foreign.pid) not in report
        node.restart(signal.SIGTERM)
        _reap(lost.pid)
        assert not os.path.exists(lost.pin)  # its pin released too
        assert pause.find(foreign.pin, foreign.pid, foreign.start) == foreign
        assert len(pause_processes(node.base)) == 1  # the recorded pod's, untouched
        node.cri.remove_pod(kept)
    finally:
        asyncio.run(pause.kill(foreign, 30.0))  # and reaped, this process being its parent
        pause.release_pin(foreign.pin)
        leaves = [f"{cgroup}/crio-{Path(p.pin).name}" for p in (lost, foreign)]
        Hierarchies.from_host().remove([*leaves, cgroup])
        shutil.rmtree(tmp_path / "other-crio-ns", ignore_errors=True)
