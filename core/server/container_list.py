"""ListContainers: filtered by id (or prefix), pod, state and labels; from memory only.

The kubelet lists every second or so; each record's CRI message is kept
serialized until the record changes, and the reply is put together from
those bytes (a repeated field is just its entries one after another).
"""

from __future__ import annotations

from crio.api import api_pb2 as api
from crio.server import _cri_out
from crio.server._common import labels_match, state_of
from crio.server.deps import Deps
from crio.state.records import ContainerRecord

__all__ = ["list_containers"]

#: Field 1 (``containers``), wire type 2 (length-delimited).
_ENTRY_TAG = b"\x0a"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _wire(deps: Deps, ctr: ContainerRecord) -> bytes:
    cached = deps.wire_cache.get(ctr.container_id)
    if cached is not None and cached[0] is ctr:
        return cached[1]
    data = _cri_out.container(ctr).SerializeToString()
    entry = _ENTRY_TAG + _varint(len(data)) + data
    deps.wire_cache[ctr.container_id] = (ctr, entry)
    return entry


async def list_containers(deps: Deps, req: api.ListContainersRequest) -> api.ListContainersResponse:
    flt = req.filter
    state = state_of(deps)
    ctrs = state.containers(flt.pod_sandbox_id or None)
    out = []
    want_state = flt.state.state if flt.HasField("state") else None
    for ctr in ctrs:
        if ctr.infra:
            continue
        if flt.id and not ctr.container_id.startswith(flt.id):
            continue
        if want_state is not None and _cri_out.container_state(ctr.state) != want_state:
            continue
        if flt.label_selector and not labels_match(ctr.labels, flt.label_selector):
            continue
        out.append(ctr)
    out.sort(key=lambda c: c.created_at)
    if len(deps.wire_cache) > 2 * len(state.containers()) + 64:
        live = {c.container_id for c in state.containers()}
        for stale in [k for k in deps.wire_cache if k not in live]:
            del deps.wire_cache[stale]
    return api.ListContainersResponse.FromString(b"".join(_wire(deps, c) for c in out))
