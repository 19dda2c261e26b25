"""UpdateContainerResources: new cgroup limits for a created or running container."""

from __future__ import annotations

import dataclasses

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError, WrongStateError
from crio.oci.resources import oci_resources
from crio.server._common import runtime_of, state_of
from crio.server._cri_in import require, resources
from crio.server.deps import Deps
from crio.state.records import ContainerState

__all__ = ["update_container_resources"]

RPC = "UpdateContainerResources"


async def update_container_resources(
    deps: Deps, req: api.UpdateContainerResourcesRequest
) -> api.UpdateContainerResourcesResponse:
    require(req.container_id, "container_id", RPC)
    if not req.HasField("linux"):
        raise InvalidRequestError(f"{RPC}: linux is missing (only Linux resources apply here)")
    res = resources(req.linux, "linux")
    defaults = deps.spec_defaults
    oci = oci_resources(
        res,
        field_prefix="linux",
        pids_limit=defaults.pids_limit,
        cgroup_v2=defaults.cgroup_v2,
        swap_accounting=defaults.swap_accounting,
        hugepage_sizes=defaults.hugepage_sizes,
    )
    state = state_of(deps)
    container_id = state.container(req.container_id).container_id
    async with state.lock(container_id):
        ctr = state.container(container_id)
        if ctr.state not in (ContainerState.CREATED, ContainerState.RUNNING):
            raise WrongStateError(f"{RPC}: container {container_id} is {ctr.state.value}")
        await runtime_of(deps, ctr.runtime_handler).update_resources(container_id, oci)
        await state.save_container(dataclasses.replace(ctr, resources=res))
    return api.UpdateContainerResourcesResponse()
