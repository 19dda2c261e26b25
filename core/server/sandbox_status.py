"""PodSandboxStatus: the pod's record, with its containers for evented PLEG."""

from __future__ import annotations

import json

from crio.api import api_pb2 as api
from crio.server import _cri_out
from crio.server._common import state_of
from crio.server._cri_in import require
from crio.server.deps import Deps

__all__ = ["pod_sandbox_status"]


async def pod_sandbox_status(
    deps: Deps, req: api.PodSandboxStatusRequest
) -> api.PodSandboxStatusResponse:
    require(req.pod_sandbox_id, "pod_sandbox_id", "PodSandboxStatus")
    state = state_of(deps)
    pod = state.sandbox(req.pod_sandbox_id)
    containers = [c for c in state.containers(pod.pod_sandbox_id) if not c.infra]
    info: dict[str, str] = {}
    if req.verbose:
        info["info"] = json.dumps(
            {
                "runtimeHandler": pod.runtime_handler,
                "hostname": pod.hostname,
                "cgroupParent": pod.cgroup_parent,
                "runDir": pod.run_dir,
                "namespaces": {
                    "network": pod.namespaces.network,
                    "ipc": pod.namespaces.ipc,
                    "uts": pod.namespaces.uts,
                    "pid": pod.namespaces.pid,
                    "shm": pod.namespaces.shm,
                },
                "infraContainerId": pod.infra_container_id,
                "sysctls": dict(pod.sysctls),
                "portMappings": [
                    {"containerPort": p.container_port, "hostPort": p.host_port,
                     "protocol": p.protocol, "hostIp": p.host_ip}
                    for p in pod.port_mappings
                ],
            },
            sort_keys=True,
        )  # fmt: skip
    return api.PodSandboxStatusResponse(
        status=_cri_out.pod_sandbox_status(pod),
        info=info,
        containers_statuses=[_cri_out.container_status(c) for c in containers],
        timestamp=deps.clock(),
    )
