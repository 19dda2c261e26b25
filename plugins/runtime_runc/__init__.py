"""runtime_runc: runtime_type ``oci``, any runc-compatible CLI (runc, crun) under conmon."""

from __future__ import annotations

from crio.config import Config, RuntimeHandler
from crio.plugins import hookimpl
from crio_plugins.runtime_runc.runtime import RuncRuntime

__all__ = ["RuncRuntime", "crio_runtime"]


@hookimpl(trylast=True)
def crio_runtime(handler_name: str, handler: RuntimeHandler, config: Config) -> RuncRuntime | None:
    if handler.runtime_type != "oci":
        return None
    return RuncRuntime.from_config(handler_name, handler, config)
