"""Pod networking end to end: a real crio process, the real CNI plugins, CRI over its socket.

Each test gives its crio a private bridge network (bridge name, subnet,
host-local dataDir) in the daemon's own net.d, and checks afterwards that
none of its veths, leases, iptables rules or pinned netns are left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from crio.api import api_pb2 as api
from crio.config import NetworkConfig
from crio.network import PodNetwork
from crio_plugins.net_cni import CNINetwork
from support.cni import CNIEnv
from support.cri import container_config, seed_images
from support.daemon import CrioProcess

NO_LEFTOVERS = {"veths": [], "leases": [], "iptables": []}


@pytest.fixture
def net(crio: CrioProcess) -> Iterator[CNIEnv]:
    env = CNIEnv(crio.base)
    try:
        yield env
    finally:
        if crio.proc is not None and crio.proc.poll() is None:
            crio.stop()
        env.container_ids.extend(_recorded_ids(crio))
        env.cleanup()


def _results_dir(crio: CrioProcess) -> Path:
    return crio.base / "runroot" / "crio-net" / "results"


def _recorded_ids(crio: CrioProcess) -> list[str]:
    directory = _results_dir(crio)
    if not directory.is_dir():
        return []
    return [p.name.rsplit("-", 1)[0] for p in directory.glob("*.json")]


def netns_of(crio: CrioProcess, pod_id: str) -> str:
    """The pod's pinned netns, from net_cni's attachment record."""
    record = json.loads((_results_dir(crio) / f"{pod_id}-eth0.json").read_text())
    return str(record["netns"])


def pod_config(ports: list[tuple[int, int]] | None = None) -> api.PodSandboxConfig:
    name = f"net-{secrets.token_hex(4)}"
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="cni-test"),
        hostname=name,
        port_mappings=[
            api.PortMapping(protocol=api.TCP, container_port=c, host_port=h)
            for c, h in (ports or [])
        ],
        # As the kubelet sends it: per-container PID namespaces, so no infra container.
        linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(pid=api.CONTAINER)
            )
        ),
    )


def run_pod(runtime: Any, net: CNIEnv, config: api.PodSandboxConfig) -> str:
    pod_id = str(runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config)).pod_sandbox_id)
    net.container_ids.append(pod_id)
    return pod_id


def pod_ip(runtime: Any, pod_id: str) -> str:
    status = runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
    return str(status.status.network.ip)


def stop_and_remove(runtime: Any, pod_id: str) -> None:
    runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def ping(ip: str, netns: str | None = None) -> bool:
    prefix = ["nsenter", f"--net={netns}"] if netns else []
    cmd = [*prefix, "busybox", "ping", "-c", "1", "-W", "5", ip]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def network_condition(runtime: Any) -> api.RuntimeCondition:
    status = runtime.Status(api.StatusRequest())
    (condition,) = [c for c in status.status.conditions if c.type == "NetworkReady"]
    return condition


def test_two_pods_and_the_host_reach_each_other(crio: CrioProcess, net: CNIEnv) -> None:
    net.write(net.conflist())
    seed_images(crio.base / "root", crio.base / "runroot")
    crio.start()
    with crio.channel() as channel:
        runtime = crio.runtime_stub(channel)
        assert network_condition(runtime).status
        a = run_pod(runtime, net, pod_config())
        b = run_pod(runtime, net, pod_config())
        ip_a, ip_b = pod_ip(runtime, a), pod_ip(runtime, b)
        assert ip_a != ip_b and ip_a.startswith(net.subnet.rsplit(".", 1)[0])
        assert ping(ip_b, netns_of(crio, a))
        assert ping(ip_a, netns_of(crio, b))
        assert ping(ip_a)  # the host
        check_network_stats(runtime, crio, a, b)
        netns_a = netns_of(crio, a)
        stop_and_remove(runtime, a)
        stop_and_remove(runtime, b)
    assert not Path(netns_a).exists()
    assert net.leftovers() == NO_LEFTOVERS


def _eth0_bytes(netns: str) -> tuple[int, int]:
    text = subprocess.run(
        ["nsenter", f"--net={netns}", "cat", "/proc/net/dev"], capture_output=True, text=True
    ).stdout
    (line,) = [x for x in text.splitlines() if x.strip().startswith("eth0:")]
    fields = line.split(":", 1)[1].split()
    return int(fields[0]), int(fields[8])


def check_network_stats(runtime: Any, crio: CrioProcess, a: str, b: str) -> None:
    """Pod network counters, for a pod without processes (read by entering its namespace)
    and for one with a running container (read through that process)."""
    created = runtime.CreateContainer(
        api.CreateContainerRequest(
            pod_sandbox_id=b, config=container_config("c", ["sleep", "3600"])
        )
    )
    runtime.StartContainer(api.StartContainerRequest(container_id=created.container_id))
    stats = runtime.ListPodSandboxStats(api.ListPodSandboxStatsRequest()).stats
    by_id = {s.attributes.id: s.linux.network.default_interface for s in stats}
    for pod_id in (a, b):
        eth0 = by_id[pod_id]
        rx, tx = _eth0_bytes(netns_of(crio, pod_id))
        assert eth0.name == "eth0"
        assert 0 < eth0.rx_bytes.value <= rx and 0 < eth0.tx_bytes.value <= tx


_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
conn, _ = s.accept()
conn.sendall(b"hello through the hostPort")
conn.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_host_port_from_localhost(crio: CrioProcess, net: CNIEnv) -> None:
    net.write(net.conflist())
    crio.start()
    host_port = free_port()
    with crio.channel() as channel:
        runtime = crio.runtime_stub(channel)
        pod_id = run_pod(runtime, net, pod_config([(8080, host_port)]))
        server = subprocess.Popen(
            ["nsenter", f"--net={netns_of(crio, pod_id)}", sys.executable, "-c", _SERVER, "8080"],
            stdout=subprocess.PIPE,
        )
        try:
            assert server.stdout is not None and server.stdout.readline() == b"listening\n"
            with socket.create_connection(("127.0.0.1", host_port), timeout=30) as conn:
                assert conn.recv(100) == b"hello through the hostPort"
        finally:
            server.kill()
            server.wait()
            stop_and_remove(runtime, pod_id)
    assert net.leftovers() == NO_LEFTOVERS


def test_unparsable_conflist(crio: CrioProcess, net: CNIEnv) -> None:
    net.write('{"cniVersion": "1.0.0", "name": "broken", "plugins": [')
    crio.start()
    with crio.channel() as channel:
        runtime = crio.runtime_stub(channel)
        condition = network_condition(runtime)
        assert not condition.status
        assert condition.reason == "NetworkPluginNotReady"
        assert "10-test.conflist: not valid JSON" in condition.message
        with pytest.raises(grpc.RpcError) as info:
            run_pod(runtime, net, pod_config())
        assert "10-test.conflist: not valid JSON" in str(info.value.details())
        listed = runtime.ListPodSandbox(api.ListPodSandboxRequest()).items
        assert [p for p in listed if p.state == api.SANDBOX_READY] == []


def test_plugin_rejects_the_conflist(crio: CrioProcess, net: CNIEnv) -> None:
    conf = net.conflist()
    conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.1.2.0/99"}]]
    net.write(conf)
    crio.start()
    with crio.channel() as channel:
        runtime = crio.runtime_stub(channel)
        assert network_condition(runtime).status  # only the plugin can tell
        with pytest.raises(grpc.RpcError) as info:
            run_pod(runtime, net, pod_config())
        details = str(info.value.details())
        assert "CNI plugin bridge ADD" in details
        assert "10.1.2.0/99" in details  # host-local's own words, through bridge
        listed = runtime.ListPodSandbox(api.ListPodSandboxRequest()).items
        assert [p for p in listed if p.state == api.SANDBOX_READY] == []
    assert net.leftovers() == NO_LEFTOVERS
    assert _recorded_ids(crio) == []


def test_restart_then_stop_cleans_everything(crio: CrioProcess, net: CNIEnv) -> None:
    net.write(net.conflist())
    crio.start()
    with crio.channel() as channel:
        runtime = crio.runtime_stub(channel)
        pod_id = run_pod(runtime, net, pod_config([(80, free_port())]))
        ip = pod_ip(runtime, pod_id)
        netns = netns_of(crio, pod_id)
    assert net.leases() == [ip]
    assert any("CNI-DN-" in rule for rule in net.leftovers()["iptables"])
    assert crio.stop(signal.SIGKILL) != 0
    crio.start()
    with crio.channel() as channel:
        runtime = crio.runtime_stub(channel)
        assert pod_ip(runtime, pod_id) == ip
        stop_and_remove(runtime, pod_id)
    assert net.leftovers() == NO_LEFTOVERS
    assert not Path(netns).exists()
    assert _recorded_ids(crio) == []


def test_twenty_pods_in_parallel(crio: CrioProcess, net: CNIEnv) -> None:
    net.write(net.conflist())
    crio.start()
    with crio.channel() as channel:
        runtime = crio.runtime_stub(channel)
        with ThreadPoolExecutor(20) as pool:
            ids = list(pool.map(lambda _: run_pod(runtime, net, pod_config()), range(20)))
            ips = [pod_ip(runtime, i) for i in ids]
            assert len(set(ips)) == 20
            assert sorted(net.leases()) == sorted(ips)
            list(pool.map(lambda i: stop_and_remove(runtime, i), ids))
    assert net.leftovers() == NO_LEFTOVERS


def test_start_detaches_pods_the_state_does_not_know(crio: CrioProcess, net: CNIEnv) -> None:
    """A pod attached by a crio that died before recording it is cleaned up at start."""
    net.write(net.conflist())
    lost = CNINetwork(
        NetworkConfig(network_dir=str(net.net_dir), plugin_dirs=["/usr/lib/cni"]),
        crio.base / "runroot" / "crio-net",
    )
    pod_id = net.new_id()
    pod = PodNetwork(pod_id, "lost", "cni-test", "uid-lost", net.netns())

    async def attach() -> None:
        await lost.start()
        await lost.setup(pod)

    asyncio.run(attach())
    assert len(net.leases()) == 1 and _recorded_ids(crio) == [pod_id]
    crio.start()
    assert _recorded_ids(crio) == []
    assert net.leftovers() == NO_LEFTOVERS


def test_dual_stack_pod_status(crio: CrioProcess, net: CNIEnv) -> None:
    conf = net.conflist(portmap=False)
    v6 = f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}::/64"
    conf["plugins"][0]["ipam"]["ranges"].append([{"subnet": v6}])
    net.write(conf)
    crio.start()
    with crio.channel() as channel:
        runtime = crio.runtime_stub(channel)
        pod_id = run_pod(runtime, net, pod_config())
        status = runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
        assert ipaddress.ip_address(status.status.network.ip).version == 4
        (extra,) = status.status.network.additional_ips
        assert ipaddress.ip_address(extra.ip) in ipaddress.ip_network(v6)
        stop_and_remove(runtime, pod_id)
    assert net.leftovers() == NO_LEFTOVERS
