"""Containers through CRI on runc, crun and in a pod VM: lifecycle, logs, exec, OOM, resources.

The same case runs on every handler; what it checks is what the kubelet
sees (statuses, events, log files, exec output, stats) and what the
container sees of itself (its cgroup's limits, from inside).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from crio.api import api_pb2 as api
from support.conformance import Case
from support.cri import EventWatch, container_config, rpc_error, wait_until

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
TERM_AWARE = ["sh", "-c", "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done"]
#: Waits on a pod VM under TCG on a loaded machine: generous, never a measurement.
LONG = 300.0


def test_container_lifecycle(case: Case) -> None:
    pod_id = case.pod()
    config = container_config("web", TERM_AWARE, labels={"c": "1"})
    cid = case.create(pod_id, config)
    status = case.cri.status(cid)
    assert status.state == api.CONTAINER_CREATED
    assert status.created_at > 0 and status.started_at == 0
    assert status.image.image == "localhost/busybox:latest"
    assert status.image_ref.startswith("sha256:")
    pod_config = case.cri.configs[pod_id]
    assert status.log_path == str(Path(pod_config.log_directory) / config.log_path)
    with EventWatch(case.cri, timeout=LONG) as events:
        case.cri.start(cid)
        events.wait(cid, api.CONTAINER_STARTED_EVENT)
    status = case.cri.status(cid)
    assert status.state == api.CONTAINER_RUNNING
    assert status.started_at >= status.created_at
    [listed] = [c for c in case.cri.containers(pod_sandbox_id=pod_id) if c.id == cid]
    assert listed.labels["c"] == "1"
    assert case.exec(cid, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"sh\0-c\0")
    case.cri.stop(cid, timeout=60)  # the trap ends it at once: no 60 s wait
    status = case.cri.status(cid)
    assert status.state == api.CONTAINER_EXITED
    assert (status.exit_code, status.reason) == (0, "Completed")
    assert status.finished_at >= status.started_at
    assert b" stdout F ready\n" in Path(status.log_path).read_bytes()
    case.cri.stop(cid)  # stopping a stopped container is fine
    case.cri.remove(cid)
    case.cri.remove(cid)  # and removing a removed one
    assert rpc_error(case.cri.status, cid).code() is grpc.StatusCode.NOT_FOUND
    assert rpc_error(case.cri.stop, cid).code() is grpc.StatusCode.NOT_FOUND


def test_stop_timeout_then_sigkill(case: Case) -> None:
    # PID 1 without a TERM handler ignores TERM: only the SIGKILL after the timeout ends it.
    cid = case.run(command=["sleep", "3600"], name="stubborn")
    case.cri.stop(cid, timeout=1)
    status = case.cri.status(cid)
    assert (status.state, status.exit_code, status.reason) == (api.CONTAINER_EXITED, 137, "Error")


def test_exit_is_recorded_and_announced(case: Case) -> None:
    pod_id = case.pod()
    cid = case.create(pod_id, container_config("job", ["sh", "-c", "echo done; exit 3"]))
    with EventWatch(case.cri, timeout=LONG) as events:
        case.cri.start(cid)
        event = events.wait(cid, api.CONTAINER_STOPPED_EVENT)
    [reported] = [s for s in event.containers_statuses if s.id == cid]
    assert (reported.state, reported.exit_code, reported.reason) == (
        api.CONTAINER_EXITED, 3, "Error",
    )  # fmt: skip
    assert event.pod_sandbox_status.id == pod_id
    exited = api.ContainerStateValue(state=api.CONTAINER_EXITED)
    assert cid in [c.id for c in case.cri.containers(state=exited)]


def test_exec_sync_output_exit_code_and_timeout(case: Case) -> None:
    cid = case.run(envs={"GREETING": "hi"})
    reply = case.exec(cid, ["sh", "-c", "echo $GREETING; echo oops >&2; printf tail; exit 7"])
    assert (reply.stdout, reply.stderr, reply.exit_code) == (b"hi\ntail", b"oops\n", 7)
    error = rpc_error(case.cri.exec, cid, ["sleep", "30"], timeout=1)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "timed out after 1" in error.details()
    # The timed-out process was killed: only PID 1 and the new exec remain.
    ps = case.exec(cid, ["ps", "-o", "comm"]).stdout.decode().split()
    assert ps.count("sleep") == 1  # PID 1 itself is "sleep 3600"
    error = rpc_error(case.cri.exec, cid, ["/no/such/binary"])
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "no/such/binary" in error.details()


def test_logs_partial_lines_and_reopen(case: Case) -> None:
    script = (
        "printf 'abc'; sleep 0.2; printf 'def\\n'; echo err >&2; "
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after; sleep 3600"
    )
    cid = case.run(command=["sh", "-c", script], name="logger")
    log_path = Path(case.cri.status(cid).log_path)
    wait_until(lambda: "stderr F err" in log_path.read_text(), timeout=LONG)
    records = [line.split(" ", 3)[1:] for line in log_path.read_text().splitlines()]
    assert ["stdout", "P", "abc"] in records
    assert ["stdout", "F", "def"] in records
    assert ["stderr", "F", "err"] in records
    rotated = log_path.with_name("0.log.1")
    os.rename(log_path, rotated)
    case.cri.rt.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=cid))
    assert log_path.exists()
    case.exec(cid, ["touch", "/tmp/go"])
    wait_until(lambda: "after" in log_path.read_text(), timeout=LONG)
    assert "after" not in rotated.read_text()


def test_oom_kill_is_reported(case: Case) -> None:
    resources = api.LinuxContainerResources(memory_limit_in_bytes=16 * MiB)
    # tail keeps the whole endless "line" of /dev/zero in memory.
    config = container_config("hog", ["tail", "/dev/zero"], resources=resources)
    cid = case.create(case.pod(), config)
    with EventWatch(case.cri, timeout=LONG) as events:
        case.cri.start(cid)
        events.wait(cid, api.CONTAINER_STOPPED_EVENT)
    status = case.cri.status(cid)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")


def _cgroup_view(case: Case, cid: str) -> dict[str, str]:
    """The container's own limits as it sees them, on cgroup v1 (host) or v2 (guest)."""
    script = (
        "if [ -e /sys/fs/cgroup/cgroup.controllers ]; then "
        "echo memory $(cat /sys/fs/cgroup/memory.max); echo cpu $(cat /sys/fs/cgroup/cpu.max); "
        "echo weight $(cat /sys/fs/cgroup/cpu.weight); "
        "echo cpus $(cat /sys/fs/cgroup/cpuset.cpus); else "
        "echo memory $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); "
        "cd /sys/fs/cgroup/cpu; echo cpu $(cat cpu.cfs_quota_us) $(cat cpu.cfs_period_us); "
        "echo shares $(cat /sys/fs/cgroup/cpu/cpu.shares); "
        "echo cpus $(cat /sys/fs/cgroup/cpuset/cpuset.cpus); fi"
    )  # fmt: skip
    out = case.exec(cid, ["sh", "-c", script]).stdout.decode()
    return dict(line.split(" ", 1) for line in out.splitlines())


def _weight(shares: int) -> str:
    """cpu.shares as cgroup v2's cpu.weight (the OCI runtimes' conversion)."""
    return str(1 + ((shares - 2) * 9999) // 262142)


def test_resources_reach_the_containers_cgroup(case: Case) -> None:
    resources = api.LinuxContainerResources(
        cpu_shares=512,
        cpu_quota=50_000,
        cpu_period=100_000,
        cpuset_cpus="0",
        memory_limit_in_bytes=64 * MiB,
        oom_score_adj=500,
    )
    cid = case.run(resources=resources)
    seen = _cgroup_view(case, cid)
    assert seen["memory"] == str(64 * MiB)
    assert seen["cpus"] == "0"
    if "weight" in seen:
        assert (seen["cpu"], seen["weight"]) == ("50000 100000", _weight(512))
    else:
        assert (seen["cpu"], seen["shares"]) == ("50000 100000", "512")
    assert case.exec(cid, ["cat", "/proc/1/oom_score_adj"]).stdout == b"500\n"
    assert case.cri.status(cid).resources.linux.memory_limit_in_bytes == 64 * MiB

    update = api.LinuxContainerResources(memory_limit_in_bytes=96 * MiB, cpu_shares=256)
    case.cri.rt.UpdateContainerResources(
        api.UpdateContainerResourcesRequest(container_id=cid, linux=update)
    )
    seen = _cgroup_view(case, cid)
    assert seen["memory"] == str(96 * MiB)
    assert seen.get("weight", _weight(256)) == _weight(256)
    assert seen.get("shares", "256") == "256"
    assert case.cri.status(cid).resources.linux.memory_limit_in_bytes == 96 * MiB


def test_container_and_pod_stats(case: Case) -> None:
    pod_id = case.pod()
    resources = api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)
    cid = case.run(
        command=["sh", "-c", "dd if=/dev/zero of=/data bs=1M count=3; sleep 3600"],
        resources=resources,
    )
    case.exec(
        cid, ["sh", "-c", "while [ ! -s /data ] || [ $(stat -c %s /data) -lt 3145728 ]; do :; done"]
    )
    first = case.cri.rt.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert first.attributes.id == cid
    assert first.cpu.usage_core_nano_seconds.value > 0
    assert 0 < first.memory.working_set_bytes.value <= 64 * MiB
    assert first.memory.available_bytes.value == 64 * MiB - first.memory.working_set_bytes.value
    assert first.writable_layer.used_bytes.value >= 3 * MiB
    assert first.writable_layer.inodes_used.value >= 1
    case.exec(cid, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
    second = case.cri.rt.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert second.cpu.usage_core_nano_seconds.value >= first.cpu.usage_core_nano_seconds.value
    assert second.cpu.HasField("usage_nano_cores")
    listed = case.cri.rt.ListContainerStats(api.ListContainerStatsRequest()).stats
    assert cid in [s.attributes.id for s in listed]
    pod = case.cri.rt.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=pod_id)).stats
    assert pod.attributes.id == pod_id
    assert pod.linux.memory.working_set_bytes.value > 0
    assert pod.linux.cpu.usage_core_nano_seconds.value >= first.cpu.usage_core_nano_seconds.value
    # The pod's processes (infra and containers), not every process of a pod VM's guest.
    assert 1 <= pod.linux.process.process_count.value < 20
    assert cid in [c.attributes.id for c in pod.linux.containers]
    pods = case.cri.rt.ListPodSandboxStats(api.ListPodSandboxStatsRequest()).stats
    assert pod_id in [p.attributes.id for p in pods]
