"""net_cni: pod networking through CNI plugins (the ``Network`` of crio).

The configuration comes from ``[crio.network]``: the first network list in
``network_dir`` by file name (or the one named ``cni_default_network``),
re-read when the directory changes; plugins are searched in ``plugin_dirs``.
Every attachment is recorded under the runroot crio gives, so that DEL works
after a daemon restart. See :mod:`.protocol` for the CNI protocol itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from crio.config import NetworkConfig
from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.net_cni.network import CNINetwork

__all__ = ["CNINetwork", "crio_network"]


@hookimpl(trylast=True)
def crio_network(config: NetworkConfig, runroot: Path) -> CNINetwork:
    # Imported when a configuration asks for it, not when crio loads its plugins.
    from crio_plugins.net_cni.network import CNINetwork

    return CNINetwork(config, runroot)


def __getattr__(name: str) -> Any:
    if name == "CNINetwork":
        from crio_plugins.net_cni.network import CNINetwork

        return CNINetwork
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
