"""Pod sandboxes through CRI with the real runc and crun: run, status, list, stop, remove."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc

from crio.api import api_pb2 as api
from support.cri import container_config, rpc_error
from support.node import Node


def test_host_network_pod_lifecycle(node: Node, handler: str) -> None:
    config = node.pod(host_network=True, labels={"app": "web"})
    pod_id = node.cri.run_pod(config, runtime_handler=handler)
    status = node.cri.pod_status(pod_id)
    assert status.state == api.SANDBOX_READY
    assert status.runtime_handler == handler
    assert status.metadata.name == config.metadata.name
    assert status.labels["app"] == "web"
    assert status.linux.namespaces.options.network == api.NODE
    assert status.network.ip == ""  # host network: no pod IP
    listed = node.cri.pods()
    assert [p.id for p in listed] == [pod_id]
    node.cri.stop_pod(pod_id)
    assert node.cri.pod_status(pod_id).state == api.SANDBOX_NOTREADY
    node.cri.stop_pod(pod_id)  # idempotent
    node.cri.remove_pod(pod_id)
    node.cri.remove_pod(pod_id)  # idempotent
    assert node.cri.pods() == []
    error = rpc_error(node.cri.pod_status, pod_id)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert pod_id in error.details()


def test_pod_namespaces_are_pinned_and_released(node: Node, handler: str) -> None:
    node.use_loopback_network()
    config = node.pod(
        host_network=False, hostname="podhost", sysctls={"net.ipv4.ping_group_range": "0 0"}
    )
    pod_id = node.cri.run_pod(config, runtime_handler=handler)
    netns = node.base / "ns" / "netns" / pod_id
    ipcns = node.base / "ns" / "ipcns" / pod_id
    assert netns.exists() and ipcns.exists()
    cid = node.cri.create(
        pod_id,
        container_config("c", ["sh", "-c", "sleep 3600"]),
        start=True,
    )
    reply = node.cri.exec(
        cid,
        [
            "sh",
            "-c",
            "hostname; cat /proc/sys/net/ipv4/ping_group_range; "
            "readlink /proc/self/ns/net; cat /etc/hostname",
        ],
    )
    lines = reply.stdout.decode().split("\n")
    assert lines[0] == "podhost"
    assert lines[1].split() == ["0", "0"]
    assert lines[2] == f"net:[{os.stat(netns).st_ino}]"
    assert lines[3] == "podhost"
    assert lines[2] != os.readlink("/proc/self/ns/net")
    shm = node.cri.exec(cid, ["sh", "-c", "grep ' /dev/shm ' /proc/mounts"]).stdout.decode()
    assert "tmpfs" in shm and "size=65536k" in shm
    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)
    assert not netns.exists() and not ipcns.exists()
    assert not Path("/sys/fs/cgroup/memory", config.linux.cgroup_parent.lstrip("/")).exists()


def test_dns_config_hosts_and_hostname_files(node: Node) -> None:
    dns = api.DNSConfig(
        servers=["10.96.0.10"], searches=["ns.svc.cluster.local"], options=["ndots:5"]
    )
    pod_id = node.cri.run_pod(node.pod(host_network=True, dns=dns))
    cid = node.cri.create(pod_id, container_config("c"), start=True)
    resolv = node.cri.exec(cid, ["cat", "/etc/resolv.conf"]).stdout.decode()
    assert resolv.splitlines() == [
        "nameserver 10.96.0.10",
        "search ns.svc.cluster.local",
        "options ndots:5",
    ]
    hosts = node.cri.exec(cid, ["cat", "/etc/hosts"]).stdout
    assert hosts == Path("/etc/hosts").read_bytes()  # host network: the node's own
    hostname = node.cri.exec(cid, ["hostname"]).stdout.decode().strip()
    assert hostname == os.uname().nodename


def test_list_filters(node: Node) -> None:
    a = node.cri.run_pod(node.pod(labels={"tier": "a"}))
    b = node.cri.run_pod(node.pod(labels={"tier": "b"}))
    node.cri.stop_pod(b)
    rt = node.cri.rt

    def ids(flt: api.PodSandboxFilter) -> list[str]:
        return [p.id for p in rt.ListPodSandbox(api.ListPodSandboxRequest(filter=flt)).items]

    assert ids(api.PodSandboxFilter(label_selector={"tier": "a"})) == [a]
    assert ids(api.PodSandboxFilter(id=b[:12])) == [b]
    ready = api.PodSandboxStateValue(state=api.SANDBOX_READY)
    assert ids(api.PodSandboxFilter(state=ready)) == [a]
    assert set(ids(api.PodSandboxFilter())) == {a, b}


def test_infra_container_when_drop_infra_ctr_is_off(make_node, handler: str) -> None:  # type: ignore[no-untyped-def]
    node = make_node({"crio.runtime": {"drop_infra_ctr": False}})
    pod_id = node.cri.run_pod(node.pod(), runtime_handler=handler)
    info = json.loads(
        node.cri.rt.PodSandboxStatus(
            api.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
        ).info["info"]
    )
    infra = info["infraContainerId"]
    assert infra and node.cri.containers() == []  # the pause container is not listed
    pause = node.base / f"rt-{handler}" / infra
    assert pause.is_dir()  # but the runtime runs it
    cid = node.cri.create(pod_id, container_config("c"), start=True)
    assert node.cri.exec(cid, ["true"]).exit_code == 0
    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)
    assert not pause.exists()


def test_removing_a_pod_with_many_containers(node: Node) -> None:
    # Twelve containers removed at once once hung crio (the store's lock waiters
    # filled the thread pool its own work needed).
    pod_id = node.cri.run_pod(node.pod())
    cids = [node.cri.create(pod_id, container_config(f"c{i}"), start=i % 2 == 0) for i in range(12)]
    node.cri.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
    node.cri.rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
    assert node.cri.containers() == [] and len(cids) == 12
