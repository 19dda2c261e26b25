"""storage_overlay: the ``overlay`` graph driver.

Declares what it will provide; selecting it is refused until the driver lands.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from crio.errors import UnsupportedError
from crio.plugins import hookimpl

__all__ = ["crio_graph_driver"]

NAME = "overlay"


@hookimpl(trylast=True)
def crio_graph_driver(name: str, home: Path, runroot: Path, options: Sequence[str]) -> None:
    if name != NAME:
        return None
    raise UnsupportedError(f"storage driver {NAME!r} is not built yet")
