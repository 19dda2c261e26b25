"""What every RPC handler may use: narrow references, no behaviour."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from crio.metrics import Metrics
from crio.oci.container import ImageConfig, SpecDefaults
from crio.server._tasks import TaskSet
from crio.state.hub import EventHub

if TYPE_CHECKING:
    from crio.config import Config
    from crio.image.pull import Puller
    from crio.network import Network
    from crio.oci.hooks import HookDirs
    from crio.oci.runtime import Runtime
    from crio.plugins import Plugins
    from crio.state.store import StateStore
    from crio.storage import Store
    from crio.streaming.server import StreamServer

__all__ = ["Deferred", "Deps", "NodeInfo"]

T = TypeVar("T")


class Deferred(Generic[T]):
    """One object, made on first use (its module may be heavy and many nodes never need it)."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None

    def get(self) -> T:
        if self._value is None:
            self._value = self._make()
        return self._value


def _puller() -> Puller:
    from crio.image.pull import Puller  # the registry client, signatures, archive transports

    return Puller()


@dataclass(slots=True)
class NodeInfo:
    """Node-wide facts the kubelet tells crio at run time (not persisted: it resends them)."""

    pod_cidr: str = ""


@dataclass(frozen=True, slots=True)
class Deps:
    """The collaborators of the CRI handlers."""

    config: Config
    plugins: Plugins
    runtimes: Mapping[str, Runtime]
    network: Network | None
    #: Why there is no network plugin, for NetworkReady's message.
    network_error: str = ""
    node: NodeInfo = field(default_factory=NodeInfo)
    clock: Callable[[], int] = time.time_ns
    #: The image, layer and container store (None only in tests that need none).
    store: Store | None = None
    #: Pulls in progress, so that concurrent pulls of one image share one download.
    image_pulls: Deferred[Puller] = field(default_factory=lambda: Deferred(_puller))
    #: Pod and container records (None only in tests of the info RPCs).
    state: StateStore | None = None
    #: Container events for GetContainerEvents.
    events: EventHub = field(default_factory=EventHub)
    #: Background work that outlives an RPC (exit watchers).
    tasks: TaskSet = field(default_factory=TaskSet)
    #: What every config.json starts from (node settings and host facts).
    spec_defaults: SpecDefaults = field(default_factory=SpecDefaults)
    #: CPU usage samples for usage_nano_cores: id -> (timestamp ns, usage ns).
    cpu_samples: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Container id -> (mount point, directory) of its writable layer, for stats.
    layer_dirs: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The streaming server behind Exec, Attach and PortForward URLs (None in tests without).
    streaming: StreamServer | None = None
    #: Image id (its config's digest) -> what a container inherits from that config.
    image_configs: dict[str, ImageConfig] = field(default_factory=dict)
    #: Serialises this process's container-layer changes in the store: the store orders
    #: in-process waiters with a thread each, so many at once could starve its own work.
    layer_changes: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Container id -> (record, its serialized CRI Container) for ListContainers.
    wire_cache: dict[str, tuple[object, bytes]] = field(default_factory=dict)
    #: What crio measures about itself (records nothing unless metrics are enabled).
    metrics: Metrics = field(default_factory=Metrics)
    #: The OCI hooks of ``hooks_dir`` (None: no hooks, in tests that build Deps directly).
    hooks: HookDirs | None = None
