"""storage_btrfs: the ``btrfs`` graph driver (containers/storage's layout).

Layers are subvolumes and snapshots under ``ROOT/btrfs/subvolumes``; see
:mod:`crio_plugins.storage_btrfs.driver`. Selected by ``storage_driver =
"btrfs"`` where the store's root is on btrfs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.storage_btrfs.driver import BtrfsDriver

__all__ = ["crio_graph_driver"]

NAME = "btrfs"


@hookimpl(trylast=True)
def crio_graph_driver(
    name: str, home: Path, runroot: Path, options: Sequence[str]
) -> BtrfsDriver | None:
    if name != NAME:
        return None
    # Imported when a configuration asks for it, not when crio loads its plugins.
    from crio_plugins.storage_btrfs.driver import BtrfsDriver

    return BtrfsDriver(home, runroot, options)
