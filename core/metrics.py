"""What crio measures about itself: the thin interface core reports to.

Core code reports through :class:`Metrics` (``deps.metrics``) and never
imports a metrics library: the base class records nothing, which is what
runs when ``[crio.metrics] enable_metrics`` is false. :func:`create` builds
the Prometheus implementation (:mod:`crio._prometheus`) only when metrics
are enabled, so ``prometheus_client`` is imported by nobody else.

Events that plugins already announce through notification hooks (a
container's exit, and with it an OOM kill) reach the implementation as a
hook implementation, not through this interface. Work done by plugin
objects (the pod network's ADD and DEL) is timed around the calls core
makes to them (:class:`TimedNetwork`).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crio.config import Config
    from crio.network import Network, NetworkStatus, PodNetwork

__all__ = ["COLLECTORS", "Metrics", "TimedNetwork", "create", "registry_of"]

#: The collector names ``metrics_collectors`` may list, and the series each one adds.
COLLECTORS: dict[str, str] = {
    "operations": "crio_grpc_requests_total, crio_grpc_request_duration_seconds",
    "image_pulls": "crio_image_pulls_total, crio_image_pull_bytes_total, "
    "crio_image_pull_duration_seconds",
    "containers": "crio_containers, crio_pod_sandboxes",
    "containers_oom": "crio_containers_oom_kills_total",
    "startup": "crio_startup_recovered_objects, crio_startup_released_objects",
    "network": "crio_network_operations_total, crio_network_operation_duration_seconds",
    "storage": "crio_storage_used_bytes, crio_storage_images, crio_storage_layers",
}


class Metrics:
    """Records nothing: the interface, and what runs while metrics are disabled."""

    enabled = False

    def rpc_done(self, rpc: str, code: str, seconds: float) -> None:
        """One CRI call ended with status ``code`` (``"OK"``, ``"NOT_FOUND"``, ...)."""

    def image_pulled(self, registry: str, nbytes: int, seconds: float, ok: bool) -> None:
        """A pull from ``registry`` ended; ``nbytes`` were downloaded for it."""

    def network_done(self, operation: str, seconds: float, ok: bool) -> None:
        """A pod network ``operation`` (``"ADD"`` or ``"DEL"``) ended."""

    def started(self, pod_sandboxes: int, containers: int, released: int) -> None:
        """Start-up restored these records and released ``released`` leftovers."""

    async def start(self, sources: Any) -> None:
        """Begin serving (the implementation's listeners); ``sources`` feeds scrapes."""

    async def close(self) -> None:
        """Stop serving."""


def create(config: Config) -> Metrics:
    """The metrics of a daemon: Prometheus when enabled, else the no-op base.

    :raises ConfigError: a listener's address is unusable (when served).
    """
    if not config.crio.metrics.enable_metrics:
        return Metrics()
    from crio._prometheus import PrometheusMetrics  # the one import of prometheus_client

    return PrometheusMetrics(config.crio.metrics)


def registry_of(reference: str) -> str:
    """The label a pull is counted under: a docker reference's registry, else its transport.

    ``docker.io/library/busybox:1`` -> ``docker.io``; ``localhost:5000/x`` ->
    ``localhost:5000``; ``oci:/srv/layout:tag`` -> ``oci``.
    """
    text = reference.removeprefix("docker://")
    transport, sep, rest = text.partition(":")
    # "oci:/srv/x" names a transport; "localhost:5000/x" and "busybox:1" do not.
    if sep and transport and not {"/", "."} & set(transport) and rest[:1] in ("/", "."):
        return transport
    first, sep, _ = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


class TimedNetwork:
    """The pod network with its ADD (``setup``) and DEL (``teardown``) timed."""

    def __init__(self, network: Network, metrics: Metrics) -> None:
        self.inner = network
        self._metrics = metrics

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def ready(self) -> tuple[bool, str, str]:
        return self.inner.ready()

    async def setup(self, pod: PodNetwork) -> NetworkStatus:
        started, ok = time.perf_counter(), False
        try:
            status = await self.inner.setup(pod)
            ok = True
            return status
        finally:
            self._metrics.network_done("ADD", time.perf_counter() - started, ok)

    async def teardown(self, pod: PodNetwork) -> None:
        started, ok = time.perf_counter(), False
        try:
            await self.inner.teardown(pod)
            ok = True
        finally:
            self._metrics.network_done("DEL", time.perf_counter() - started, ok)

    async def status(self, pod: PodNetwork) -> NetworkStatus:
        return await self.inner.status(pod)

    async def update_pod_cidr(self, pod_cidr: str) -> None:
        await self.inner.update_pod_cidr(pod_cidr)

    async def gc(self, valid_pod_sandbox_ids: Collection[str], dry_run: bool = False) -> list[str]:
        return await self.inner.gc(valid_pod_sandbox_ids, dry_run)
