"""What lifecycle notification hooks receive.

Plain frozen records, separate from crio's internal state, so that a plugin
observing events depends on nothing but these fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["ContainerEvent", "ImageEvent", "SandboxEvent"]


@dataclass(frozen=True, slots=True)
class SandboxEvent:
    """A pod sandbox at the moment of the event."""

    pod_sandbox_id: str
    name: str
    namespace: str
    uid: str
    runtime_handler: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """A container at the moment of the event; ``exit_code`` is set once it exited."""

    container_id: str
    pod_sandbox_id: str
    name: str
    image: str
    exit_code: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ImageEvent:
    """An image pulled into or removed from the store."""

    image_id: str
    names: Sequence[str] = ()
