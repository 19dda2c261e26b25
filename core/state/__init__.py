"""Pod and container records, their durable persistence and the container event hub."""

from __future__ import annotations

from crio.state.hub import ContainerChange, EventHub, EventKind
from crio.state.intents import Intent, Operation
from crio.state.locks import PodLock
from crio.state.records import (
    ContainerRecord,
    ContainerState,
    DnsConfig,
    SandboxRecord,
    SandboxState,
    container_name_key,
    sandbox_name_key,
)
from crio.state.store import StateStore

__all__ = [
    "ContainerChange",
    "ContainerRecord",
    "ContainerState",
    "DnsConfig",
    "EventHub",
    "EventKind",
    "Intent",
    "Operation",
    "PodLock",
    "SandboxRecord",
    "SandboxState",
    "StateStore",
    "container_name_key",
    "sandbox_name_key",
]
