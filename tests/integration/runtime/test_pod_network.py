"""Pods on a real CNI bridge: the pod IP in status and inside, /etc/hosts, and a clean teardown."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import pytest

from crio.api import api_pb2 as api
from support.cni import CNIEnv
from support.cri import container_config
from support.node import Node


@pytest.fixture
def cni(node: Node) -> CNIEnv:
    if shutil.which("iptables") is None or not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("needs iptables and the CNI plugins in /usr/lib/cni")
    env = CNIEnv(node.base / "cni")
    env.net_dir = node.base / "net.d"
    env.write(env.conflist(portmap=True))
    yield env
    env.cleanup()


def test_bridge_pod_network(node: Node, cni: CNIEnv, handler: str) -> None:
    config = node.pod(host_network=False, hostname="netpod")
    pod_id = node.cri.run_pod(config, runtime_handler=handler)
    cni.container_ids.append(pod_id)
    status = node.cri.pod_status(pod_id)
    ip = status.network.ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(cni.subnet)
    assert status.linux.namespaces.options.network == api.POD
    a = node.cri.create(pod_id, container_config("a"), start=True)
    b = node.cri.create(pod_id, container_config("b"), start=True)
    addresses = node.cri.exec(a, ["cat", "/proc/net/fib_trie"]).stdout.decode()
    assert ip in addresses
    # Both containers share the pod's network namespace.
    assert node.cri.exec(a, ["readlink", "/proc/self/ns/net"]).stdout == \
        node.cri.exec(b, ["readlink", "/proc/self/ns/net"]).stdout  # fmt: skip
    hosts = node.cri.exec(a, ["cat", "/etc/hosts"]).stdout.decode()
    assert f"{ip}\tnetpod" in hosts
    assert cni.veths() and cni.leases()
    node.cri.stop_pod(pod_id)
    assert cni.leftovers() == {"veths": [], "leases": [], "iptables": []}
    node.cri.remove_pod(pod_id)
