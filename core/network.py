"""The ``Network`` contract: how a network plugin wires pods.

The runtime creates the pod's network namespace; the network plugin puts
interfaces, addresses and routes into it (for CNI: runs the configured
plugins with ADD) and removes them again. Host-network pods never reach it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Network", "NetworkStatus", "PodNetwork", "PortMapping"]


@dataclass(frozen=True, slots=True)
class PortMapping:
    """A CRI ``PortMapping`` (hostPort)."""

    container_port: int
    host_port: int
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass(frozen=True, slots=True)
class PodNetwork:
    """The pod being attached: identity, namespace path and its requests."""

    pod_sandbox_id: str
    name: str
    namespace: str
    uid: str
    netns_path: str
    port_mappings: Sequence[PortMapping] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    ingress_bandwidth: int = 0
    egress_bandwidth: int = 0


@dataclass(frozen=True, slots=True)
class NetworkStatus:
    """What :meth:`Network.setup` achieved: IPs for PodSandboxStatus and the raw result."""

    ips: Sequence[str] = ()
    interfaces: Sequence[Mapping[str, Any]] = ()
    result: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Network(Protocol):
    """The pod network (what ``crio_network`` returns)."""

    async def start(self) -> None:
        """Called once when crio starts: load configs, watch for changes."""

    async def close(self) -> None: ...

    def ready(self) -> tuple[bool, str, str]:
        """NetworkReady: (ready, reason, message); reason and message say why not."""

    async def setup(self, pod: PodNetwork) -> NetworkStatus:
        """Attach the pod; on failure, undo what was done and raise with the plugin's message."""

    async def teardown(self, pod: PodNetwork) -> None:
        """Detach the pod; must work after a restart and after the netns is gone. Idempotent."""

    async def status(self, pod: PodNetwork) -> NetworkStatus:
        """What the pod has now (from the cached set-up result)."""

    async def update_pod_cidr(self, pod_cidr: str) -> None:
        """UpdateRuntimeConfig's pod CIDR, for IPAM range configuration."""
