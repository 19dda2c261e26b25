"""Pod and container records, their durable persistence and the container event hub."""

from __future__ import annotations

from crio.state.hub import ContainerChange, EventHub, EventKind
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
    "SandboxRecord",
    "SandboxState",
    "StateStore",
    "container_name_key",
    "sandbox_name_key",
]
