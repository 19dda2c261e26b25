"""net_cni: pod networking through CNI plugins (the ``Network`` of crio).

So far it finds and validates the configured network and reports
NetworkReady from that; attaching pods answers UNIMPLEMENTED until the CNI
work lands.
"""

from __future__ import annotations

from pathlib import Path

from crio.config import NetworkConfig
from crio.errors import UnsupportedError
from crio.network import NetworkStatus, PodNetwork
from crio.plugins import hookimpl
from crio_plugins.net_cni.confdir import find_network

__all__ = ["CNINetwork", "crio_network"]


class CNINetwork:
    def __init__(self, config: NetworkConfig, runroot: Path) -> None:
        self.config = config
        self.runroot = runroot

    async def start(self) -> None:
        self.runroot.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    def ready(self) -> tuple[bool, str, str]:
        network, why = find_network(
            self.config.network_dir, self.config.plugin_dirs, self.config.cni_default_network
        )
        if network is None:
            return False, "NetworkPluginNotReady", f"cni config uninitialized: {why}"
        return True, "", ""

    async def setup(self, pod: PodNetwork) -> NetworkStatus:
        raise UnsupportedError("pod networking is not implemented by net_cni yet")

    async def teardown(self, pod: PodNetwork) -> None:
        raise UnsupportedError("pod networking is not implemented by net_cni yet")

    async def status(self, pod: PodNetwork) -> NetworkStatus:
        raise UnsupportedError("pod networking is not implemented by net_cni yet")

    async def update_pod_cidr(self, pod_cidr: str) -> None:
        return None


@hookimpl(trylast=True)
def crio_network(config: NetworkConfig, runroot: Path) -> CNINetwork:
    return CNINetwork(config, runroot)
