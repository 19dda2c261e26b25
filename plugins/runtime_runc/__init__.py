"""runtime_runc: runtime_type ``oci``, any runc-compatible CLI (runc, crun) under conmon."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crio.config import Config, RuntimeHandler
from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.runtime_runc.runtime import RuncRuntime

__all__ = ["RuncRuntime", "crio_runtime"]


@hookimpl(trylast=True)
def crio_runtime(handler_name: str, handler: RuntimeHandler, config: Config) -> RuncRuntime | None:
    if handler.runtime_type != "oci":
        return None
    # Imported when a configuration asks for it, not when crio loads its plugins.
    from crio_plugins.runtime_runc.runtime import RuncRuntime

    return RuncRuntime.from_config(handler_name, handler, config)


def __getattr__(name: str) -> Any:
    if name == "RuncRuntime":
        from crio_plugins.runtime_runc.runtime import RuncRuntime

        return RuncRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
