"""The ``Network`` contract: how a network plugin wires pods.

The runtime creates and pins the pod's network namespace (and brings its
``lo`` up); the network plugin puts interfaces, addresses and routes into it
(for CNI: runs the configured plugins with ADD) and removes them again.
Host-network pods never reach it.

The flow core follows::

    ns = await runtime.create_sandbox(spec)                  # PodNamespaces(network=path)
    status = await network.setup(PodNetwork(..., netns_path=ns.network))
    ...                                                      # PodSandboxStatus: status.ips
    await network.teardown(pod)                              # StopPodSandbox, before unpinning

Calls for one pod are serialised by the plugin; calls for different pods
may run concurrently.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, runtime_checkable

from crio.errors import InvalidRequestError

__all__ = [
    "EGRESS_BANDWIDTH_ANNOTATION",
    "INGRESS_BANDWIDTH_ANNOTATION",
    "Network",
    "NetworkStatus",
    "PodNetwork",
    "PortMapping",
    "bandwidth_from_annotations",
    "parse_quantity",
]

INGRESS_BANDWIDTH_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_BANDWIDTH_ANNOTATION = "kubernetes.io/egress-bandwidth"


@dataclass(frozen=True, slots=True)
class PortMapping:
    """A CRI ``PortMapping`` with a host port (mappings without one are not passed).

    ``protocol`` is lower case: ``tcp``, ``udp`` or ``sctp``; ``host_ip`` empty
    means every host address.
    """

    container_port: int
    host_port: int
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass(frozen=True, slots=True)
class PodNetwork:
    """The pod being attached: identity, namespace path and its requests.

    ``netns_path`` is the pinned namespace (a bind mount); on teardown it may
    be empty or gone, the plugin then uses what it recorded at set-up.
    Bandwidths are bits per second, 0 meaning "no limit unless the pod's
    ``kubernetes.io/{ingress,egress}-bandwidth`` annotation asks for one".
    """

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
    """What :meth:`Network.setup` achieved.

    ``ips``: the pod's addresses without prefix length, IPv4 first (the first
    one is PodSandboxStatus's ``network.ip``, the rest ``additional_ips``).
    ``interfaces``: the pod-side interfaces (name, mac, sandbox).
    ``result``: the plugin's raw result (for CNI: the final ADD result).
    An empty status means the pod has no network set up.
    """

    ips: Sequence[str] = ()
    interfaces: Sequence[Mapping[str, Any]] = ()
    result: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Network(Protocol):
    """The pod network (what ``crio_network`` returns)."""

    async def start(self) -> None:
        """Called once when crio starts: load configs and the records of set-up pods."""

    async def close(self) -> None:
        """Called once when crio stops; pods stay attached."""

    def ready(self) -> tuple[bool, str, str]:
        """NetworkReady: (ready, reason, message); reason and message say why not.

        Must be cheap and non-blocking (it is called on every Status RPC);
        it notices configuration changes.
        """

    async def setup(self, pod: PodNetwork) -> NetworkStatus:
        """Attach the pod.

        On failure nothing is left half-made (what was done is undone) and the
        error carries the plugin's own message: a
        :class:`~crio.errors.UnavailableError` when no network is configured,
        :class:`~crio.errors.InvalidRequestError` for a bad request (port,
        annotation), a :class:`~crio.errors.PluginError` when a plugin fails.
        """

    async def teardown(self, pod: PodNetwork) -> None:
        """Detach the pod; works after a daemon restart and after the netns is gone.

        Idempotent: a pod that is not attached (or never was) is success.
        Raises :class:`~crio.errors.PluginError` when a plugin fails; the
        record is kept so that a later call retries.
        """

    async def status(self, pod: PodNetwork) -> NetworkStatus:
        """What the pod has now (from the recorded set-up result); empty if not attached."""

    async def update_pod_cidr(self, pod_cidr: str) -> None:
        """UpdateRuntimeConfig's pod CIDR (``"v4"`` or ``"v4,v6"``), for pods set up from now on."""

    async def gc(self, valid_pod_sandbox_ids: Collection[str], dry_run: bool = False) -> list[str]:
        """Detach every recorded pod whose id is not in ``valid_pod_sandbox_ids``.

        Core calls it after restoring its pods at start-up, so that attachments
        of pods it lost (e.g. killed during RunPodSandbox) are cleaned up;
        ``crio check`` calls it with ``dry_run`` to only list them.

        :returns: one line per attachment detached (or that would be).
        """


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_FACTORS = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(text: str, field_name: str) -> int:
    """A Kubernetes resource quantity (``"10M"``, ``"1Gi"``, ``"500k"``) as an integer.

    :raises InvalidRequestError: naming ``field_name`` when it is not one.
    """
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise InvalidRequestError(f"{field_name}: {text!r} is not a quantity such as '10M'")
    try:
        value = Decimal(match.group(1)) * _FACTORS[match.group(2)]
    except InvalidOperation:
        raise InvalidRequestError(f"{field_name}: {text!r} is not a number") from None
    if value < 0:
        raise InvalidRequestError(f"{field_name}: {text!r} is negative")
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def bandwidth_from_annotations(annotations: Mapping[str, str]) -> tuple[int, int]:
    """(ingress, egress) bits per second from the pod's bandwidth annotations; 0 if absent."""
    out = []
    for key in (INGRESS_BANDWIDTH_ANNOTATION, EGRESS_BANDWIDTH_ANNOTATION):
        value = annotations.get(key)
        out.append(parse_quantity(value, f"annotations[{key}]") if value else 0)
    return out[0], out[1]
