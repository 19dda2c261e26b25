"""RuntimeConfig: the cgroup driver the kubelet must match."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.server.deps import Deps

__all__ = ["runtime_config"]


async def runtime_config(deps: Deps, req: api.RuntimeConfigRequest) -> api.RuntimeConfigResponse:
    driver = (
        api.CgroupDriver.SYSTEMD
        if deps.config.crio.runtime.cgroup_manager == "systemd"
        else api.CgroupDriver.CGROUPFS
    )
    return api.RuntimeConfigResponse(linux=api.LinuxRuntimeConfiguration(cgroup_driver=driver))
