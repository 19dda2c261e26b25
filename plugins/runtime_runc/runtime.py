"""The runc-compatible runtime.

So far it checks that its runtime and conmon are present and reports
RuntimeReady from that; the pod and container operations answer
UNIMPLEMENTED until the RuntimeService work lands.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crio.config import Config, RuntimeHandler
from crio.errors import ConfigError, UnsupportedError
from crio.oci.runtime import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ExecResult,
    PodNamespaces,
    SandboxSpec,
    StreamIO,
)

__all__ = ["RuncRuntime"]


@dataclass(slots=True)
class RuncRuntime:
    handler_name: str
    runtime_path: str
    runtime_root: str
    conmon_path: str

    @classmethod
    def from_config(cls, name: str, handler: RuntimeHandler, config: Config) -> RuncRuntime:
        if handler.options:
            key = sorted(handler.options)[0]
            raise ConfigError(
                "unknown key for runtime_type 'oci'",
                key=f"crio.runtime.runtimes.{name}.{key}",
            )
        path = handler.runtime_path or shutil.which(name) or ""
        return cls(
            handler_name=name,
            runtime_path=path or name,
            runtime_root=handler.runtime_root or f"/run/crio/runtimes/{name}",
            conmon_path=handler.monitor_path or config.crio.runtime.conmon,
        )

    def _missing(self) -> str:
        for what, path in (("runtime", self.runtime_path), ("conmon", self.conmon_path)):
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                return f"{what} {path} is not an executable file"
        return ""

    async def start(self) -> None:
        # A missing binary is reported through RuntimeReady rather than
        # refusing to start: the kubelet then shows the reason on the node.
        os.makedirs(self.runtime_root, exist_ok=True)

    async def close(self) -> None:
        return None

    def ready(self) -> tuple[bool, str, str]:
        missing = self._missing()
        return (False, "RuntimeBinaryMissing", missing) if missing else (True, "", "")

    def _not_yet(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"{what} is not implemented by runtime_runc yet")

    async def create_sandbox(self, spec: SandboxSpec) -> PodNamespaces:
        raise self._not_yet("create_sandbox")

    async def start_sandbox(self, pod_sandbox_id: str, network: Mapping[str, Any]) -> None:
        raise self._not_yet("start_sandbox")

    async def stop_sandbox(self, pod_sandbox_id: str) -> None:
        raise self._not_yet("stop_sandbox")

    async def remove_sandbox(self, pod_sandbox_id: str) -> None:
        raise self._not_yet("remove_sandbox")

    async def create_container(self, spec: ContainerSpec) -> None:
        raise self._not_yet("create_container")

    async def start_container(self, container_id: str) -> None:
        raise self._not_yet("start_container")

    async def stop_container(self, container_id: str, timeout: float) -> None:
        raise self._not_yet("stop_container")

    async def remove_container(self, container_id: str) -> None:
        raise self._not_yet("remove_container")

    async def container_state(self, container_id: str) -> ContainerState:
        raise self._not_yet("container_state")

    async def exec_sync(
        self, container_id: str, command: Sequence[str], timeout: float
    ) -> ExecResult:
        raise self._not_yet("exec_sync")

    async def exec(self, container_id: str, command: Sequence[str], io: StreamIO) -> int:
        raise self._not_yet("exec")

    async def attach(self, container_id: str, io: StreamIO) -> None:
        raise self._not_yet("attach")

    async def port_forward(self, pod_sandbox_id: str, port: int) -> tuple[Any, Any]:
        raise self._not_yet("port_forward")

    async def update_resources(self, container_id: str, resources: Mapping[str, Any]) -> None:
        raise self._not_yet("update_resources")

    async def reopen_log(self, container_id: str) -> None:
        raise self._not_yet("reopen_log")

    async def container_stats(self, container_id: str) -> ContainerStats:
        raise self._not_yet("container_stats")
