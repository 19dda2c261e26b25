"""Pod sandboxes through CRI on runc, crun and as pod VMs: lifecycle, hostname, sysctls, files."""

from __future__ import annotations

import grpc
import pytest

from crio.api import api_pb2 as api
from support.conformance import POD_HOSTNAME, VM_HANDLER, Case, Cluster
from support.cri import container_config, rpc_error

pytestmark = pytest.mark.slow

TRUSTED = "io.kubernetes.cri-o.TrustedSandbox"


def test_pod_lifecycle(case: Case) -> None:
    pod_id = case.pod(fresh=True, labels={"app": "web"})
    config = case.cri.configs[pod_id]
    status = case.cri.pod_status(pod_id)
    assert status.state == api.SANDBOX_READY
    assert status.runtime_handler == case.handler
    assert status.metadata.name == config.metadata.name
    assert status.labels["app"] == "web"
    assert status.linux.namespaces.options.network == api.POD
    assert pod_id in [p.id for p in case.cri.pods()]
    cid = case.create(pod_id, container_config("c"), start=True)
    case.cri.stop_pod(pod_id)
    assert case.cri.pod_status(pod_id).state == api.SANDBOX_NOTREADY
    assert case.cri.status(cid).state == api.CONTAINER_EXITED
    case.cri.stop_pod(pod_id)  # idempotent
    case.cri.remove_pod(pod_id)
    case.cri.remove_pod(pod_id)  # idempotent
    assert pod_id not in [p.id for p in case.cri.pods()]
    error = rpc_error(case.cri.pod_status, pod_id)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert pod_id in error.details()
    assert rpc_error(case.cri.status, cid).code() is grpc.StatusCode.NOT_FOUND


def test_hostname_sysctls_and_pod_files(case: Case) -> None:
    cid = case.run()
    script = (
        "hostname; cat /etc/hostname; cat /proc/sys/net/ipv4/ping_group_range; "
        "grep -c \"$(hostname)\" /etc/hosts; grep ' /dev/shm ' /proc/self/mountinfo"
    )
    lines = case.exec(cid, ["sh", "-c", script]).stdout.decode().splitlines()
    assert lines[0] == lines[1] == POD_HOSTNAME
    assert lines[2].split() == ["0", "0"]
    assert int(lines[3]) >= 1
    shm = lines[4].split()
    assert shm[shm.index("-") + 1] == "tmpfs" and "size=65536k" in shm[-1]
    assert {"nosuid", "nodev", "noexec"} <= set(shm[5].split(","))


def test_containers_of_a_pod_share_its_ipc_and_network(case: Case) -> None:
    a, b = case.run(name="a"), case.run(name="b")
    for namespace in ("net", "ipc", "uts"):
        link = ["readlink", f"/proc/self/ns/{namespace}"]
        assert case.exec(a, link).stdout == case.exec(b, link).stdout, namespace
    assert case.exec(a, ["sh", "-c", "echo shared > /dev/shm/x"]).exit_code == 0
    assert case.exec(b, ["cat", "/dev/shm/x"]).stdout == b"shared\n"


def test_untrusted_node_sends_host_namespace_pods_to_the_trusted_runtime(
    cluster: Cluster,
) -> None:
    """The 2017 rule: untrusted by default, but a pod in the node's namespaces is trusted."""
    if cluster.no_vm:
        pytest.skip(cluster.no_vm)
    cri, node = cluster.cri, cluster.node
    for shape in ({"host_network": True}, {"host_network": False, "pid": api.NODE},
                  {"host_network": False, "ipc": api.NODE}):  # fmt: skip
        pod_id = cri.run_pod(node.pod(annotations={TRUSTED: "false"}, **shape))
        try:
            assert cri.pod_status(pod_id).runtime_handler == "runc", shape
        finally:
            cri.stop_pod(pod_id)
            cri.remove_pod(pod_id)
        # Naming the VM handler and asking for the node's namespaces is refused.
        error = rpc_error(cri.run_pod, node.pod(**shape), runtime_handler=VM_HANDLER)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, shape
        assert "namespace_options" in error.details() and "runtime_type 'vm'" in error.details()
