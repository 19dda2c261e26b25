"""Attach: validate, then hand out a single-use streaming URL to the container's stdio."""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.server._common import runtime_of, streaming_of
from crio.server._cri_in import require
from crio.server.container_exec import check_streams, running_container
from crio.server.deps import Deps
from crio.streaming.requests import AttachRequest

__all__ = ["attach"]


async def attach(deps: Deps, req: api.AttachRequest) -> api.AttachResponse:
    require(req.container_id, "container_id", "Attach")
    check_streams("Attach", tty=req.tty, stdout=req.stdout, stderr=req.stderr)
    ctr = running_container(deps, "Attach", req.container_id)
    request = AttachRequest(
        runtime_of(deps, ctr.runtime_handler),
        ctr.container_id,
        tty=req.tty,
        # A container created without stdin has none to attach to: the client's is ignored.
        stdin=req.stdin and ctr.stdin,
        stdout=req.stdout,
        stderr=req.stderr,
    )
    return api.AttachResponse(url=streaming_of(deps).url(request))
