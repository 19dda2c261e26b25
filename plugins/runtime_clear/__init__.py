"""runtime_clear: runtime_type ``vm``, one lightweight VM per pod (Clear Containers).

Declares what it will provide; a handler of this type is refused at start-up
until the VM runtime lands.
"""

from __future__ import annotations

from crio.config import Config, RuntimeHandler
from crio.errors import UnsupportedError
from crio.plugins import hookimpl

__all__ = ["crio_runtime"]


@hookimpl(trylast=True)
def crio_runtime(handler_name: str, handler: RuntimeHandler, config: Config) -> None:
    if handler.runtime_type != "vm":
        return None
    raise UnsupportedError(
        f"handler {handler_name}: runtime_type 'vm' (runtime_clear) is not built yet"
    )
