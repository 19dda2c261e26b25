"""UpdateRuntimeConfig: the kubelet hands over the node's pod CIDR."""

from __future__ import annotations

import ipaddress

from crio.api import api_pb2 as api
from crio.errors import InvalidRequestError
from crio.server.deps import Deps

__all__ = ["update_runtime_config"]


async def update_runtime_config(
    deps: Deps, req: api.UpdateRuntimeConfigRequest
) -> api.UpdateRuntimeConfigResponse:
    pod_cidr = req.runtime_config.network_config.pod_cidr
    if not pod_cidr:
        return api.UpdateRuntimeConfigResponse()
    # The kubelet sends one CIDR, or an IPv4 and an IPv6 one separated by a comma.
    for part in pod_cidr.split(","):
        try:
            ipaddress.ip_network(part.strip(), strict=False)
        except ValueError:
            raise InvalidRequestError(
                f"runtime_config.network_config.pod_cidr: {part.strip()!r} is not a CIDR"
            ) from None
    deps.node.pod_cidr = pod_cidr
    if deps.network is not None:
        await deps.network.update_pod_cidr(pod_cidr)
    return api.UpdateRuntimeConfigResponse()
