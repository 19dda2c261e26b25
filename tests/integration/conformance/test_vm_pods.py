"""Pod VMs under load: twenty at once, through the node's untrusted default.

Every call must succeed or fail on purpose: crio's log is checked for RPCs
that failed with an unexpected exception (the package fixture checks it
again at the end). Twenty small VMs fit this machine (``VM_MEMORY`` MiB each).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from crio.api import api_pb2 as api
from support.conformance import SLOW_CALL, VM_HANDLER, Cluster
from support.cri import container_config

pytestmark = pytest.mark.slow

PODS = 20


def test_twenty_vm_pods_at_once(cluster: Cluster) -> None:
    if cluster.no_vm:
        pytest.skip(cluster.no_vm)
    rt, node = cluster.cri.rt, cluster.node
    configs = [node.pod(host_network=False) for _ in range(PODS)]

    def up(config: api.PodSandboxConfig) -> tuple[str, str]:
        # No handler: the node is untrusted by default, so the pod goes to the VM handler.
        pod_id = rt.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=SLOW_CALL)
        pod_id = pod_id.pod_sandbox_id
        request = api.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=container_config("c"), sandbox_config=config
        )
        cid = rt.CreateContainer(request, timeout=SLOW_CALL).container_id
        rt.StartContainer(api.StartContainerRequest(container_id=cid), timeout=SLOW_CALL)
        return pod_id, cid

    def down(pod_id: str) -> None:
        rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=SLOW_CALL)
        rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=SLOW_CALL)

    with ThreadPoolExecutor(PODS) as pool:
        started = [pool.submit(up, config) for config in configs]
        failures = [f.exception() for f in started if f.exception() is not None]
        made = [f.result() for f in started if f.exception() is None]
        try:
            assert failures == [], [_describe(e) for e in failures]
            for pod_id, cid in made:
                status = rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
                assert status.status.runtime_handler == VM_HANDLER
                state = rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid))
                assert state.status.state == api.CONTAINER_RUNNING
        finally:
            list(pool.map(down, [pod_id for pod_id, _ in made]))
    assert cluster.unexpected_errors() == []
    assert not [p for p in cluster.vm_root.iterdir() if p.name in {i[:16] for i, _ in made}]


def _describe(error: BaseException | None) -> str:
    if isinstance(error, grpc.RpcError):
        return f"{error.code()}: {error.details()}"  # type: ignore[attr-defined]
    return repr(error)
