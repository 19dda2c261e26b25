"""Resource limits in the real cgroup files, updates, and the stats RPCs."""

from __future__ import annotations

from pathlib import Path

from crio.api import api_pb2 as api
from support.cri import container_config
from support.node import Node

MiB = 1024 * 1024


def test_resources_reach_the_cgroup_files(node: Node, handler: str) -> None:
    config = node.pod()
    pod_id = node.cri.run_pod(config, runtime_handler=handler)
    resources = api.LinuxContainerResources(
        cpu_shares=512,
        cpu_quota=50_000,
        cpu_period=100_000,
        cpuset_cpus="0",
        memory_limit_in_bytes=64 * MiB,
        oom_score_adj=500,
    )
    cid = node.cri.create(pod_id, container_config("c", resources=resources), start=True)
    assert node.cgroup_file("cpu", config, cid, "cpu.shares") == "512"
    assert node.cgroup_file("cpu", config, cid, "cpu.cfs_quota_us") == "50000"
    assert node.cgroup_file("cpu", config, cid, "cpu.cfs_period_us") == "100000"
    assert node.cgroup_file("cpuset", config, cid, "cpuset.cpus") == "0"
    assert node.cgroup_file("memory", config, cid, "memory.limit_in_bytes") == str(64 * MiB)
    assert node.cri.exec(cid, ["cat", "/proc/1/oom_score_adj"]).stdout == b"500\n"
    status = node.cri.status(cid)
    assert status.resources.linux.memory_limit_in_bytes == 64 * MiB

    update = api.LinuxContainerResources(memory_limit_in_bytes=96 * MiB, cpu_shares=256)
    node.cri.rt.UpdateContainerResources(
        api.UpdateContainerResourcesRequest(container_id=cid, linux=update)
    )
    assert node.cgroup_file("memory", config, cid, "memory.limit_in_bytes") == str(96 * MiB)
    assert node.cgroup_file("cpu", config, cid, "cpu.shares") == "256"
    assert node.cri.status(cid).resources.linux.memory_limit_in_bytes == 96 * MiB


def test_negative_oom_score_adj_is_raised_to_what_crio_may_set(node: Node) -> None:
    pod_id = node.cri.run_pod(node.pod())
    resources = api.LinuxContainerResources(oom_score_adj=-997)  # a Guaranteed pod's value
    cid = node.cri.create(pod_id, container_config("c", resources=resources), start=True)
    own = int(Path("/proc/self/oom_score_adj").read_text())
    assert int(node.cri.exec(cid, ["cat", "/proc/1/oom_score_adj"]).stdout) == max(own, 0)


def test_container_and_pod_stats(node: Node, handler: str) -> None:
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    resources = api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)
    cid = node.cri.create(
        pod_id,
        container_config("c", ["sh", "-c", "dd if=/dev/zero of=/data bs=1M count=3; sleep 3600"],
                         resources=resources),
        start=True,
    )  # fmt: skip
    node.cri.exec(
        cid, ["sh", "-c", "while [ ! -s /data ] || [ $(stat -c %s /data) -lt 3145728 ]; do :; done"]
    )
    first = node.cri.rt.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert first.attributes.id == cid
    assert first.cpu.usage_core_nano_seconds.value > 0
    assert 0 < first.memory.working_set_bytes.value <= 64 * MiB
    assert first.memory.available_bytes.value == 64 * MiB - first.memory.working_set_bytes.value
    assert first.writable_layer.used_bytes.value >= 3 * MiB
    assert first.writable_layer.inodes_used.value >= 1
    node.cri.exec(cid, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
    second = node.cri.rt.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert second.cpu.usage_core_nano_seconds.value >= first.cpu.usage_core_nano_seconds.value
    assert second.cpu.HasField("usage_nano_cores")
    listed = node.cri.rt.ListContainerStats(api.ListContainerStatsRequest()).stats
    assert [s.attributes.id for s in listed] == [cid]
    pod = node.cri.rt.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=pod_id)).stats
    assert pod.attributes.id == pod_id
    assert pod.linux.memory.working_set_bytes.value > 0
    assert pod.linux.cpu.usage_core_nano_seconds.value >= first.cpu.usage_core_nano_seconds.value
    assert pod.linux.process.process_count.value >= 1
    assert [c.attributes.id for c in pod.linux.containers] == [cid]
    pods = node.cri.rt.ListPodSandboxStats(api.ListPodSandboxStatsRequest()).stats
    assert [p.attributes.id for p in pods] == [pod_id]
