"""storage_vfs: the ``vfs`` graph driver: every layer a full copy; works anywhere.

See :mod:`crio_plugins.storage_vfs.driver`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.storage_vfs.driver import VfsDriver

__all__ = ["crio_graph_driver"]

NAME = "vfs"


@hookimpl(trylast=True)
def crio_graph_driver(
    name: str, home: Path, runroot: Path, options: Sequence[str]
) -> VfsDriver | None:
    if name != NAME:
        return None
    # Imported when a configuration asks for it, not when crio loads its plugins.
    from crio_plugins.storage_vfs.driver import VfsDriver

    return VfsDriver(home, runroot, options)
