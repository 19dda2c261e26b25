"""Intent records: what an RPC is about to do, written before it touches the host.

An RPC that makes or removes host objects in several steps (namespaces,
network, layers, a conmon process, then the record) first writes an intent
durably. A crio killed in between finds the intent on start and finishes the
job: a create that never reached its record is rolled back (everything it may
have made is released), a remove is rolled forward. An intent whose create
did reach its record is simply dropped, so dropping one needs no fsync.

Layout: ``STATE_DIR/pending/ID.json``, one per object being changed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crio.state.records import RECORD_VERSION, ContainerRecord, SandboxRecord

__all__ = ["Intent", "Operation"]


class Operation(enum.Enum):
    """The RPC an intent belongs to (CRI's names)."""

    RUN_POD_SANDBOX = "RunPodSandbox"
    REMOVE_POD_SANDBOX = "RemovePodSandbox"
    CREATE_CONTAINER = "CreateContainer"
    REMOVE_CONTAINER = "RemoveContainer"

    @property
    def creates(self) -> bool:
        return self in (Operation.RUN_POD_SANDBOX, Operation.CREATE_CONTAINER)


@dataclass(frozen=True, slots=True)
class Intent:
    """One operation in progress on one pod or container.

    ``sandbox`` or ``container`` is the record as far as it was known when the
    operation began (for a create: before anything was made; enough to find
    and release what it may have made: ids, handler, run dir, bundle).
    """

    operation: Operation
    sandbox: SandboxRecord | None = None
    container: ContainerRecord | None = None

    def __post_init__(self) -> None:
        if (self.sandbox is None) == (self.container is None):
            raise ValueError("an intent names exactly one pod sandbox or one container")

    @property
    def object_id(self) -> str:
        if self.sandbox is not None:
            return self.sandbox.pod_sandbox_id
        assert self.container is not None
        return self.container.container_id

    @property
    def subject(self) -> str:
        """``pod sandbox ID`` or ``container ID``, for log lines."""
        kind = "pod sandbox" if self.sandbox is not None else "container"
        return f"{kind} {self.object_id}"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "intent",
            "version": RECORD_VERSION,
            "operation": self.operation.value,
        }
        if self.sandbox is not None:
            doc["sandbox"] = self.sandbox.to_json()
        if self.container is not None:
            doc["container"] = self.container.to_json()
        return doc

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Intent:
        """:raises ValueError: (or KeyError, TypeError) when ``data`` is not an intent."""
        if data.get("kind") != "intent":
            raise ValueError(f"kind is {data.get('kind')!r}, not 'intent'")
        sandbox = data.get("sandbox")
        container = data.get("container")
        return cls(
            operation=Operation(data["operation"]),
            sandbox=SandboxRecord.from_json(sandbox) if sandbox is not None else None,
            container=ContainerRecord.from_json(container) if container is not None else None,
        )
