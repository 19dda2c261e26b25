"""storage_overlay: the ``overlay`` graph driver (containers/storage's layout).

Layers are overlayfs directories under ``ROOT/overlay`` with short links in
``ROOT/overlay/l``; see :mod:`crio_plugins.storage_overlay.driver`. It is the
default driver where the kernel has overlayfs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.storage_overlay.driver import OverlayDriver

__all__ = ["crio_graph_driver"]

NAME = "overlay"


@hookimpl(trylast=True)
def crio_graph_driver(
    name: str, home: Path, runroot: Path, options: Sequence[str]
) -> OverlayDriver | None:
    if name != NAME:
        return None
    # Imported when a configuration asks for it, not when crio loads its plugins.
    from crio_plugins.storage_overlay.driver import OverlayDriver

    return OverlayDriver(home, runroot, options)
