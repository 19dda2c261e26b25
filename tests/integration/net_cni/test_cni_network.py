"""CNINetwork with the real bridge, host-local, portmap and bandwidth plugins.

Each test makes its own network namespaces (``ip netns add``), its own bridge
and subnet, and checks that nothing of its own is left afterwards.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import socket
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crio.config import NetworkConfig
from crio.errors import InvalidRequestError, PluginError, UnavailableError
from crio.network import Network, PodNetwork, PortMapping
from crio_plugins.net_cni import CNINetwork
from crio_plugins.net_cni.executor import plugin_version
from crio_plugins.net_cni.protocol import CNIPluginError
from support.cni import CNIEnv

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make_network(env: CNIEnv) -> CNINetwork:
    config = NetworkConfig(network_dir=str(env.net_dir), plugin_dirs=["/usr/lib/cni"])
    network = CNINetwork(config, env.runroot)
    run(network.start())
    return network


def pod(env: CNIEnv, **kw: Any) -> PodNetwork:
    cid = env.new_id()
    return PodNetwork(
        pod_sandbox_id=cid,
        name=f"pod-{cid[:6]}",
        namespace="default",
        uid=f"uid-{cid[:8]}",
        netns_path=env.netns(),
        **kw,
    )


def netns_name(p: PodNetwork) -> str:
    return Path(p.netns_path).name


def ping(ip: str, netns: str | None = None) -> bool:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    cmd = [*prefix, "busybox", "ping", "-c", "1", "-W", "5", ip]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_network_satisfies_protocol(cni_env: CNIEnv) -> None:
    assert isinstance(make_network(cni_env), Network)


def test_real_plugins_report_versions() -> None:
    from crio_plugins.net_cni.executor import PluginRunner

    runner = PluginRunner(("/usr/lib/cni",))
    for kind in ("bridge", "host-local", "portmap", "bandwidth"):
        info = run(plugin_version(runner, kind))
        assert "1.0.0" in info.supported_versions
        assert "0.4.0" in info.supported_versions


def test_setup_status_teardown(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist())
    network = make_network(cni_env)
    assert network.ready() == (True, "", "")
    p = pod(cni_env)
    status = run(network.setup(p))

    (ip,) = status.ips
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(cni_env.subnet)
    assert status.interfaces == [
        {"name": "eth0", "mac": status.interfaces[0]["mac"], "sandbox": p.netns_path}
    ]
    shown = subprocess.run(
        ["ip", "-n", netns_name(p), "-4", "-o", "addr", "show", "eth0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f" {ip}/24 " in shown
    assert cni_env.leases() == [ip]
    assert len(cni_env.veths()) == 1
    assert any("MASQUERADE" in r for r in cni_env.leftovers()["iptables"])
    # portmap was left out: the pod has no hostPort.
    record = network.records()[p.pod_sandbox_id]
    assert record.skipped == (1,)
    assert not any("CNI-DN-" in r for r in cni_env.leftovers()["iptables"])
    assert run(network.status(p)).ips == (ip,)

    run(network.teardown(p))
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}
    assert run(network.status(p)).ips == ()
    assert list((cni_env.runroot / "results").iterdir()) == []
    run(network.teardown(p))  # idempotent


def test_two_pods_and_the_host_reach_each_other(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist())
    network = make_network(cni_env)
    a, b = pod(cni_env), pod(cni_env)
    ip_a = run(network.setup(a)).ips[0]
    ip_b = run(network.setup(b)).ips[0]
    try:
        assert ip_a != ip_b
        assert ping(ip_b, netns_name(a))
        assert ping(ip_a, netns_name(b))
        assert ping(ip_a)  # from the host, through the bridge's gateway address
    finally:
        run(network.teardown(a))
        run(network.teardown(b))
    assert not ping(ip_a)
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}


def test_host_port_from_localhost(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist())
    network = make_network(cni_env)
    host_port = free_port()
    p = pod(cni_env, port_mappings=[PortMapping(container_port=8080, host_port=host_port)])
    server = subprocess.Popen(
        ["ip", "netns", "exec", netns_name(p), sys.executable, "-c", _SERVER, "8080"],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == b"listening\n"
        run(network.setup(p))
        assert network.records()[p.pod_sandbox_id].skipped == ()
        with socket.create_connection(("127.0.0.1", host_port), timeout=30) as conn:
            assert conn.recv(100) == b"hello from the pod"
    finally:
        server.kill()
        server.wait()
        run(network.teardown(p))
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}


_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
conn, _ = s.accept()
conn.sendall(b"hello from the pod")
conn.close()
"""


def test_bad_host_port_is_invalid_request(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist())
    network = make_network(cni_env)
    p = pod(cni_env, port_mappings=[PortMapping(container_port=80, host_port=70000)])
    with pytest.raises(InvalidRequestError, match=r"port_mappings\[0\]\.host_port"):
        run(network.setup(p))
    assert network.records() == {}


def test_teardown_after_restart_uses_the_record(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist())
    first = make_network(cni_env)
    host_port = free_port()
    p = pod(cni_env, port_mappings=[PortMapping(container_port=80, host_port=host_port)])
    ip = run(first.setup(p)).ips[0]
    assert any("CNI-DN-" in r for r in cni_env.leftovers()["iptables"])
    # The daemon goes away; the config changes under it; a new one starts.
    (cni_env.net_dir / "10-test.conflist").unlink()
    second = make_network(cni_env)
    assert second.ready()[0] is False
    assert run(second.status(p)).ips == (ip,)
    run(second.teardown(p))
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}


def test_teardown_after_the_netns_is_gone(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist())
    network = make_network(cni_env)
    p = pod(cni_env)
    run(network.setup(p))
    subprocess.run(["ip", "netns", "del", netns_name(p)], check=True)
    run(network.teardown(p))
    # The lease is released, the veth went with the namespace, and the ipMasq
    # chain (which bridge 1.1.1 finds through the pod's eth0) went through the
    # stand-in namespace.
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}
    assert network.records() == {}
    standins = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "crio-del-" not in standins


def test_failed_add_is_undone_and_reports_the_plugin_message(cni_env: CNIEnv) -> None:
    conf = cni_env.conflist(portmap=False)
    conf["plugins"].append({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.no_such": "1"}})
    cni_env.write(conf)
    network = make_network(cni_env)
    p = pod(cni_env)
    with pytest.raises(CNIPluginError) as info:
        run(network.setup(p))
    assert info.value.plugin == "tuning"
    assert info.value.command == "ADD"
    assert "no_such" in info.value.msg
    assert info.value.msg in str(info.value)
    assert isinstance(info.value, PluginError)
    assert network.records() == {}
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}
    links = subprocess.run(
        ["ip", "-n", netns_name(p), "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    assert "eth0" not in links


def test_broken_config_then_reload(cni_env: CNIEnv) -> None:
    cni_env.write('{"cniVersion": "1.0.0", "name": "x", "plugins": [', "10-test.conflist")
    network = make_network(cni_env)
    ready, reason, message = network.ready()
    assert (ready, reason) == (False, "NetworkPluginNotReady")
    assert "10-test.conflist: not valid JSON" in message
    p = pod(cni_env)
    with pytest.raises(UnavailableError, match="not valid JSON"):
        run(network.setup(p))
    # A pod created after a good config appears uses it.
    cni_env.write(cni_env.conflist())
    assert network.ready() == (True, "", "")
    assert run(network.setup(p)).ips
    run(network.teardown(p))
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}


def test_missing_plugin_is_not_ready(cni_env: CNIEnv) -> None:
    conf = cni_env.conflist()
    conf["plugins"][1]["type"] = "no-such-plugin"
    cni_env.write(conf)
    network = make_network(cni_env)
    ready, _, message = network.ready()
    assert not ready
    assert "'no-such-plugin' not found in /usr/lib/cni" in message


def test_twenty_pods_in_parallel_get_distinct_addresses(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist())
    network = make_network(cni_env)
    pods = [pod(cni_env) for _ in range(20)]

    async def both() -> list[str]:
        statuses = await asyncio.gather(*(network.setup(p) for p in pods))
        ips = [s.ips[0] for s in statuses]
        await asyncio.gather(*(network.teardown(p) for p in pods))
        return ips

    ips = run(both())
    assert len(set(ips)) == 20
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}


def test_pod_cidr_becomes_the_ip_range(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist(ip_ranges=True))
    network = make_network(cni_env)
    run(network.update_pod_cidr(cni_env.subnet))
    p = pod(cni_env)
    ip = run(network.setup(p)).ips[0]
    try:
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(cni_env.subnet)
        # Without a pod CIDR host-local has no range: its own message comes back.
        other = make_network(cni_env)
        with pytest.raises(CNIPluginError, match="no IP ranges specified"):
            run(other.setup(pod(cni_env)))
        assert list(other.records()) == [p.pod_sandbox_id]  # loaded from disk
    finally:
        run(network.teardown(p))
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}


def test_bandwidth_annotations_shape_traffic(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist(bandwidth=True))
    network = make_network(cni_env)
    annotations = {
        "kubernetes.io/ingress-bandwidth": "10M",
        "kubernetes.io/egress-bandwidth": "20M",
    }
    p = pod(cni_env, annotations=annotations)
    plain = pod(cni_env)
    ifbs_before = _tbf_links("ifb")
    run(network.setup(p))
    run(network.setup(plain))
    try:
        assert network.records()[p.pod_sandbox_id].skipped == (1,)  # portmap only
        assert network.records()[plain.pod_sandbox_id].skipped == (1, 2)
        shaped = {v: _tbf(v) for v in cni_env.veths() if _tbf(v)}
        assert len(shaped) == 1
        assert "rate 10Mbit" in next(iter(shaped.values()))
        (ifb,) = set(_tbf_links("ifb")) - set(ifbs_before)
        cni_env.links.append(ifb)
        assert "rate 20Mbit" in _tbf(ifb)
    finally:
        run(network.teardown(p))
        run(network.teardown(plain))
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}
    assert ifb not in _tbf_links("ifb")


def _tbf(dev: str) -> str:
    out = subprocess.run(["tc", "qdisc", "show", "dev", dev], capture_output=True, text=True)
    return out.stdout if "tbf" in out.stdout else ""


def _tbf_links(kind: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", kind], capture_output=True, text=True
    ).stdout
    names = [line.split(":")[1].strip() for line in out.splitlines() if line]
    return [n for n in names if _tbf(n)]


def test_check_and_gc(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist(portmap=False))
    network = make_network(cni_env)
    keep, lose = pod(cni_env), pod(cni_env)
    run(network.setup(keep))
    run(network.setup(lose))
    run(network.check(keep))
    subprocess.run(["ip", "-n", netns_name(keep), "link", "del", "eth0"], check=True)
    with pytest.raises(CNIPluginError, match="CHECK"):
        run(network.check(keep))
    run(network.gc([keep.pod_sandbox_id]))
    assert list(network.records()) == [keep.pod_sandbox_id]
    run(network.teardown(keep))
    assert cni_env.leftovers()["leases"] == []
    assert cni_env.veths() == []


def test_record_is_written_before_add(cni_env: CNIEnv) -> None:
    cni_env.write(cni_env.conflist())
    network = make_network(cni_env)
    p = pod(cni_env)
    run(network.setup(p))
    path = cni_env.runroot / "results" / f"{p.pod_sandbox_id}-eth0.json"
    doc = json.loads(path.read_text())
    assert doc["netns"] == p.netns_path
    assert doc["network"]["name"] == cni_env.name
    assert doc["cniArgs"] == (
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={p.name};"
        f"K8S_POD_INFRA_CONTAINER_ID={p.pod_sandbox_id};K8S_POD_UID={p.uid}"
    )
    assert doc["result"]["cniVersion"] == "1.0.0"
    run(network.teardown(p))
    assert not path.exists()


def test_dual_stack_pod_gets_both_families(cni_env: CNIEnv) -> None:
    conf = cni_env.conflist(portmap=False)
    v6 = f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}::/64"
    ipam = conf["plugins"][0]["ipam"]
    ipam["ranges"].append([{"subnet": v6}])
    ipam["routes"].append({"dst": "::/0"})
    cni_env.write(conf)
    network = make_network(cni_env)
    p = pod(cni_env)
    ips = run(network.setup(p)).ips
    try:
        assert len(ips) == 2
        assert ipaddress.ip_address(ips[0]) in ipaddress.ip_network(cni_env.subnet)
        assert ipaddress.ip_address(ips[1]) in ipaddress.ip_network(v6)
        assert run(network.status(p)).ips == ips
        # The leak check sees the IPv6 masquerade rule while it exists.
        assert any(f"-s {ips[1]}/" in r for r in cni_env.leftovers()["iptables"])
    finally:
        run(network.teardown(p))
    assert cni_env.leftovers() == {"veths": [], "leases": [], "iptables": []}  # v4 and v6
