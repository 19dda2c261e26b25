"""ContainerStatus: the container's record; verbose adds runtime details as JSON."""

from __future__ import annotations

import json

from crio.api import api_pb2 as api
from crio.server import _cri_out
from crio.server._common import state_of
from crio.server._cri_in import require
from crio.server.deps import Deps

__all__ = ["container_status"]


async def container_status(
    deps: Deps, req: api.ContainerStatusRequest
) -> api.ContainerStatusResponse:
    require(req.container_id, "container_id", "ContainerStatus")
    ctr = state_of(deps).container(req.container_id)
    info: dict[str, str] = {}
    if req.verbose:
        info["info"] = json.dumps(
            {
                "sandboxID": ctr.pod_sandbox_id,
                "pid": ctr.pid,
                "runtimeHandler": ctr.runtime_handler,
                "bundle": ctr.bundle,
                "rootfs": ctr.rootfs,
                "attachSocket": f"{deps.config.crio.runtime.container_attach_socket_dir}/"
                f"{ctr.container_id}/attach",
                "ctlFifo": f"{ctr.bundle}/ctl",
            },
            sort_keys=True,
        )
    return api.ContainerStatusResponse(status=_cri_out.container_status(ctr), info=info)
