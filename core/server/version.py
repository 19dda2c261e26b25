"""Version: the runtime's name and versions."""

from __future__ import annotations

from crio import __version__
from crio.api import api_pb2 as api
from crio.server.deps import Deps

__all__ = ["KUBE_API_VERSION", "RUNTIME_API_VERSION", "RUNTIME_NAME", "version"]

#: The version of the kubelet runtime API (``VersionResponse.version``), fixed by CRI.
KUBE_API_VERSION = "0.1.0"
RUNTIME_NAME = "crio"
RUNTIME_API_VERSION = "v1"


async def version(deps: Deps, req: api.VersionRequest) -> api.VersionResponse:
    return api.VersionResponse(
        version=KUBE_API_VERSION,
        runtime_name=RUNTIME_NAME,
        runtime_version=__version__,
        runtime_api_version=RUNTIME_API_VERSION,
    )
