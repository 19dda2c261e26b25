"""storage_aufs: the ``aufs`` graph driver (containers/storage's layout).

Layers are aufs branches under ``ROOT/aufs/diff``; see
:mod:`crio_plugins.storage_aufs.driver`. Refused, with one line naming the
kernel, where the kernel has no aufs (every Debian 12 kernel).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.storage_aufs.driver import AufsDriver

__all__ = ["crio_graph_driver"]

NAME = "aufs"


@hookimpl(trylast=True)
def crio_graph_driver(
    name: str, home: Path, runroot: Path, options: Sequence[str]
) -> AufsDriver | None:
    if name != NAME:
        return None
    # Imported when a configuration asks for it, not when crio loads its plugins.
    from crio_plugins.storage_aufs.driver import AufsDriver

    return AufsDriver(home, runroot, options)
