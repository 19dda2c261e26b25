"""storage_devicemapper: the ``devicemapper`` graph driver (containers/storage's layout).

A thin pool (``dm.thinpooldev``, or one on loop files) with one thin device
per layer, each a snapshot of its parent's; see
:mod:`crio_plugins.storage_devicemapper.driver`. Refused where the kernel
has no device-mapper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.storage_devicemapper.driver import DevmapperDriver

__all__ = ["crio_graph_driver"]

NAME = "devicemapper"


@hookimpl(trylast=True)
def crio_graph_driver(
    name: str, home: Path, runroot: Path, options: Sequence[str]
) -> DevmapperDriver | None:
    if name != NAME:
        return None
    # Imported when a configuration asks for it, not when crio loads its plugins.
    from crio_plugins.storage_devicemapper.driver import DevmapperDriver

    return DevmapperDriver(home, runroot, options)
