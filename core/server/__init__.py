"""The CRI servicers: one module per RPC (or Status/List pair), like CRI-O's server/.

Each module holds ``async def rpc_name(deps, request) -> response`` and never
sees gRPC; :mod:`crio.server.service` wraps them. :data:`HANDLERS` maps RPC
names to them; an RPC missing here answers UNIMPLEMENTED.
"""

from __future__ import annotations

from crio.server import (
    image_fs_info,
    image_list,
    image_pull,
    image_remove,
    image_status,
    runtime_config,
    runtime_config_update,
    runtime_status,
    version,
)
from crio.server.service import Handler, StreamHandler

__all__ = ["HANDLERS"]

HANDLERS: dict[str, Handler | StreamHandler] = {
    "Version": version.version,
    "Status": runtime_status.status,
    "RuntimeConfig": runtime_config.runtime_config,
    "UpdateRuntimeConfig": runtime_config_update.update_runtime_config,
    "PullImage": image_pull.pull_image,
    "ListImages": image_list.list_images,
    "ImageStatus": image_status.image_status,
    "RemoveImage": image_remove.remove_image,
    "ImageFsInfo": image_fs_info.image_fs_info,
}
