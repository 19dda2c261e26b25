"""The CRI servicers: one module per RPC (or Status/List pair), like CRI-O's server/.

Each module holds ``async def rpc_name(deps, request) -> response`` and never
sees gRPC; :mod:`crio.server.service` wraps them. :data:`HANDLERS` maps RPC
names to them; an RPC missing here answers UNIMPLEMENTED.

A handler's module is imported on the RPC's first call, not at start-up: a
node that never pulls, execs or attaches never loads the registry client,
the signature code or the streaming protocols (see bench/README.md, "Where
the daemon's memory goes").
"""

from __future__ import annotations

from crio.server.service import Handler, LazyHandler, StreamHandler

__all__ = ["HANDLERS"]

#: RPC name -> ``module:function`` under :mod:`crio.server`.
_TARGETS = {
    "Version": "version:version",
    "Status": "runtime_status:status",
    "RuntimeConfig": "runtime_config:runtime_config",
    "UpdateRuntimeConfig": "runtime_config_update:update_runtime_config",
    "PullImage": "image_pull:pull_image",
    "ListImages": "image_list:list_images",
    "ImageStatus": "image_status:image_status",
    "RemoveImage": "image_remove:remove_image",
    "ImageFsInfo": "image_fs_info:image_fs_info",
    "RunPodSandbox": "sandbox_run:run_pod_sandbox",
    "StopPodSandbox": "sandbox_stop:stop_pod_sandbox",
    "RemovePodSandbox": "sandbox_remove:remove_pod_sandbox",
    "PodSandboxStatus": "sandbox_status:pod_sandbox_status",
    "ListPodSandbox": "sandbox_list:list_pod_sandbox",
    "CreateContainer": "container_create:create_container",
    "StartContainer": "container_start:start_container",
    "StopContainer": "container_stop:stop_container",
    "RemoveContainer": "container_remove:remove_container",
    "ContainerStatus": "container_status:container_status",
    "ListContainers": "container_list:list_containers",
    "ExecSync": "container_execsync:exec_sync",
    "Exec": "container_exec:exec_",
    "Attach": "container_attach:attach",
    "PortForward": "container_portforward:port_forward",
    "UpdateContainerResources": "container_update_resources:update_container_resources",
    "ReopenContainerLog": "container_reopen_log:reopen_container_log",
    "ContainerStats": "container_stats:container_stats",
    "ListContainerStats": "container_stats_list:list_container_stats",
    "PodSandboxStats": "sandbox_stats:pod_sandbox_stats",
    "ListPodSandboxStats": "sandbox_stats:list_pod_sandbox_stats",
    "GetContainerEvents": "container_events:get_container_events",
}

HANDLERS: dict[str, Handler | StreamHandler] = {
    rpc: LazyHandler(f"crio.server.{target}") for rpc, target in _TARGETS.items()
}
