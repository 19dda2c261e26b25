"""Prometheus metrics: the series, the scrape-time gauges and the ``/metrics`` listeners.

Imported only by :func:`crio.metrics.create` when ``enable_metrics`` is true,
so ``prometheus_client`` costs nothing to a daemon that does not serve
metrics. The series live in a registry of their own (not the library's
global one) and follow Prometheus' naming: the ``crio_`` prefix, base units
(``_seconds``, ``_bytes``) and ``_total`` on counters.

``[crio.metrics] metrics_collectors`` chooses the groups of series
(:data:`crio.metrics.COLLECTORS`); a group left out is never registered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from crio.httpd import HttpServer, Response
from crio.metrics import Metrics
from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio.config import MetricsConfig
    from crio.events import ContainerEvent
    from crio.server.deps import Deps

__all__ = ["PrometheusMetrics"]

log = logging.getLogger("crio.metrics")

#: Latency buckets of CRI calls and network operations (seconds): 1 ms to 2 min.
_RPC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Pull durations (seconds): 100 ms to 30 min.
_PULL_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
#: The classic text format (every series name here is a legacy-valid name, so the
#: library's output is that format whatever its own newest version is).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: A scrape walks the store for its size at most this often.
STORE_USAGE_MAX_AGE = 30.0


class PrometheusMetrics(Metrics):
    """The series of one daemon, and the server that hands them to scrapers."""

    enabled = True

    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self.groups = frozenset(config.metrics_collectors)
        self._deps: Deps | None = None
        self._server: HttpServer | None = None
        self._store_usage: tuple[float, int] = (0.0, 0)
        self.address = ""
        reg = self.registry
        if "operations" in self.groups:
            self._rpcs = Counter(
                "crio_grpc_requests", "CRI calls answered, by RPC and status code.",
                ["rpc", "code"], registry=reg,
            )  # fmt: skip
            self._rpc_seconds = Histogram(
                "crio_grpc_request_duration_seconds", "How long CRI calls took, by RPC.",
                ["rpc"], buckets=_RPC_BUCKETS, registry=reg,
            )  # fmt: skip
        if "image_pulls" in self.groups:
            self._pulls = Counter(
                "crio_image_pulls", "Image pulls, by registry and result (success, failure).",
                ["registry", "result"], registry=reg,
            )  # fmt: skip
            self._pull_bytes = Counter(
                "crio_image_pull_bytes", "Layer bytes downloaded by image pulls, by registry.",
                ["registry"], registry=reg,
            )  # fmt: skip
            self._pull_seconds = Histogram(
                "crio_image_pull_duration_seconds", "How long image pulls took, by registry.",
                ["registry"], buckets=_PULL_BUCKETS, registry=reg,
            )  # fmt: skip
        if "containers" in self.groups:
            self._containers = Gauge(
                "crio_containers", "Containers crio knows, by state.", ["state"], registry=reg
            )
            self._pods = Gauge(
                "crio_pod_sandboxes", "Pod sandboxes crio knows, by state.", ["state"], registry=reg
            )
        if "containers_oom" in self.groups:
            self._ooms = Counter(
                "crio_containers_oom_kills", "Containers that ended killed by the OOM killer.",
                registry=reg,
            )  # fmt: skip
        if "startup" in self.groups:
            self._recovered = Gauge(
                "crio_startup_recovered_objects",
                "Records restored when this crio started, by kind (pod_sandbox, container).",
                ["kind"], registry=reg,
            )  # fmt: skip
            self._released = Gauge(
                "crio_startup_released_objects",
                "Leftovers of crashes finished or released when this crio started.",
                registry=reg,
            )
        if "network" in self.groups:
            self._net = Counter(
                "crio_network_operations", "Pod network operations (CNI ADD, DEL), by result.",
                ["operation", "result"], registry=reg,
            )  # fmt: skip
            self._net_seconds = Histogram(
                "crio_network_operation_duration_seconds",
                "How long pod network operations (CNI ADD, DEL) took.",
                ["operation"], buckets=_RPC_BUCKETS, registry=reg,
            )  # fmt: skip
        if "storage" in self.groups:
            self._store_bytes = Gauge(
                "crio_storage_used_bytes", "Bytes the store's layers use on disk.", registry=reg
            )
            self._store_images = Gauge("crio_storage_images", "Images in the store.", registry=reg)
            self._store_layers = Gauge("crio_storage_layers", "Layers in the store.", registry=reg)

    # -- what core reports --------------------------------------------------

    def rpc_done(self, rpc: str, code: str, seconds: float) -> None:
        if "operations" in self.groups:
            self._rpcs.labels(rpc, code).inc()
            self._rpc_seconds.labels(rpc).observe(seconds)

    def image_pulled(self, registry: str, nbytes: int, seconds: float, ok: bool) -> None:
        if "image_pulls" in self.groups:
            self._pulls.labels(registry, "success" if ok else "failure").inc()
            self._pull_bytes.labels(registry).inc(nbytes)
            if ok:
                self._pull_seconds.labels(registry).observe(seconds)

    def network_done(self, operation: str, seconds: float, ok: bool) -> None:
        if "network" in self.groups:
            self._net.labels(operation, "success" if ok else "failure").inc()
            self._net_seconds.labels(operation).observe(seconds)

    def started(self, pod_sandboxes: int, containers: int, released: int) -> None:
        if "startup" in self.groups:
            self._recovered.labels("pod_sandbox").set(pod_sandboxes)
            self._recovered.labels("container").set(containers)
            self._released.set(released)

    @hookimpl
    def crio_container_exited(self, container: ContainerEvent) -> None:
        """Count OOM kills as the runtimes report exits (a notification hook)."""
        if "containers_oom" in self.groups and container.reason == "OOMKilled":
            self._ooms.inc()

    # -- serving ------------------------------------------------------------

    async def start(self, sources: Any) -> None:
        self._deps = sources
        server = HttpServer("metrics", self._handle)
        cfg = self.config
        try:
            if cfg.metrics_port:
                host, port = await server.listen_tcp(
                    cfg.metrics_host, cfg.metrics_port, "crio.metrics.metrics_port"
                )
                self.address = f"{host}:{port}"
                log.info("serving metrics on http://%s/metrics", self.address)
            if cfg.metrics_socket:
                await server.listen_unix(Path(cfg.metrics_socket), "crio.metrics.metrics_socket")
                log.info("serving metrics on unix socket %s", cfg.metrics_socket)
        except BaseException:
            await server.close()
            raise
        self._server = server

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def _handle(self, path: str) -> Response:
        if path not in ("/metrics", "/"):
            return Response(404, b"metrics are served at /metrics\n")
        await self._refresh()
        body = generate_latest(self.registry)
        return Response(200, body, CONTENT_TYPE)

    async def _refresh(self) -> None:
        """Set the gauges that describe the present (read at scrape time)."""
        deps = self._deps
        if deps is None:
            return
        if "containers" in self.groups and deps.state is not None:
            _set_by_state(self._containers, [c.state.value for c in deps.state.containers()],
                          ("created", "running", "exited", "unknown"))  # fmt: skip
            _set_by_state(self._pods, [p.state.value for p in deps.state.sandboxes()],
                          ("ready", "notready"))  # fmt: skip
        if "storage" in self.groups and deps.store is not None:
            store = deps.store
            self._store_images.set(len(await store.images()))
            self._store_layers.set(len(await store.layers()))
            self._store_bytes.set(await self._used_bytes(store))

    async def _used_bytes(self, store: Any) -> int:
        checked, used = self._store_usage
        if time.monotonic() - checked < STORE_USAGE_MAX_AGE and checked:
            return used
        from crio.server.image_fs_info import usage

        used, _ = await asyncio.to_thread(usage, Path(store.root) / store.driver.name)
        self._store_usage = (time.monotonic(), used)
        return used


def _set_by_state(gauge: Gauge, states: list[str], known: tuple[str, ...]) -> None:
    tally = Tally(states)
    for state in (*known, *sorted(set(tally) - set(known))):
        gauge.labels(state).set(tally.get(state, 0))
