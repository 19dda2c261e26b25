"""What a streaming token stands for: the request the RPC validated.

The Exec, Attach and PortForward handlers check the CRI request, resolve
the runtime that owns the container or pod, and store one of these behind
a token; the streaming server runs it when the client connects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crio.oci.runtime import Runtime

__all__ = ["AttachRequest", "ExecRequest", "PortForwardRequest", "StreamRequest"]


@dataclass(frozen=True, slots=True)
class ExecRequest:
    runtime: Runtime
    container_id: str
    command: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True

    kind = "exec"


@dataclass(frozen=True, slots=True)
class AttachRequest:
    runtime: Runtime
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True

    kind = "attach"


@dataclass(frozen=True, slots=True)
class PortForwardRequest:
    runtime: Runtime
    pod_sandbox_id: str
    #: The ports the request named; empty allows any (kubectl over SPDY names none).
    ports: tuple[int, ...] = ()

    kind = "portforward"


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest
