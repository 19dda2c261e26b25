"""The host's end of the agent channel: requests by id, events to listeners (asyncio).

A thin I/O loop around :class:`_wire.Connection`: read, feed, dispatch.
Replies resolve the future of their request; ``ready`` resolves
:attr:`AgentClient.ready`; ``output``, ``closed`` and ``exit`` go to the
listener registered for their ``container_id`` or ``exec_id`` (or to the
default listener). A fault becomes the matching :mod:`crio.errors` class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crio.errors import (
    AlreadyExistsError,
    CrioError,
    InvalidRequestError,
    NotFoundError,
    OCIRuntimeError,
    UnsupportedError,
    WrongStateError,
)
from crio_plugins.runtime_clear import _wire

__all__ = ["AgentClient", "AgentError", "Listener"]

log = logging.getLogger("crio.runtime_clear")

Listener = Callable[[_wire.Event], None]

_FAULT_ERRORS: dict[str, type[CrioError]] = {
    "invalid": InvalidRequestError,
    "not_found": NotFoundError,
    "exists": AlreadyExistsError,
    "state": WrongStateError,
    "failed": OCIRuntimeError,
    "unsupported": UnsupportedError,
}


class AgentError(OCIRuntimeError):
    """The agent channel failed (VM gone, protocol broken)."""


def fault_error(fault: _wire.Fault, where: str) -> CrioError:
    return _FAULT_ERRORS.get(fault.kind, OCIRuntimeError)(f"{where}: {fault.message}")


class AgentClient:
    """One connection to a VM's agent (over qemu's chardev socket)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str
    ) -> None:
        self.name = name
        self._reader = reader
        self._writer = writer
        self._conn = _wire.Connection(_wire.Role.HOST)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[tuple[str, str], Listener] = {}
        self.default_listener: Listener | None = None
        #: The sequence number of the last event handled; older ones are dropped.
        self.last_seq = 0
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._failure: CrioError | None = None
        self._task = loop.create_task(self._read_loop(), name=f"agent-{name}")

    @classmethod
    async def connect(
        cls, path: Path, name: str, alive: Callable[[], bool], timeout: float = 30.0
    ) -> AgentClient:
        """Connect to ``path``, retrying while qemu creates it and ``alive()`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 24)
                return cls(reader, writer, name)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if not alive():
                    raise AgentError(f"VM {name} is gone before its agent socket opened") from exc
                if loop.time() > deadline:
                    raise AgentError(f"VM {name}: no agent socket {path} after {timeout}s") from exc
                await asyncio.sleep(0.01)

    # -- requests ---------------------------------------------------------------------

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a request and wait for its reply.

        :raises CrioError: the class matching the agent's fault, or
            :class:`AgentError` when the channel fails first.
        """
        if self._failure is not None:
            raise self._failure
        rid = self._conn.next_id()
        try:
            data = self._conn.send(_wire.Request(rid, op, args))
        except _wire.LocalProtocolError as exc:
            raise InvalidRequestError(f"VM {self.name}: {exc}") from exc
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._writer.write(data)
            await self._writer.drain()
            return await future
        except (ConnectionError, OSError) as exc:
            raise AgentError(f"VM {self.name}: agent channel broke: {exc}") from exc
        finally:
            self._pending.pop(rid, None)

    def listen(self, key: tuple[str, str], listener: Listener) -> None:
        """Route events whose ``key[0]`` field equals ``key[1]`` to ``listener``."""
        self._listeners[key] = listener

    def unlisten(self, key: tuple[str, str]) -> None:
        self._listeners.pop(key, None)

    # -- the read loop -----------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(1 << 16)
                self._conn.receive_data(data)
                while True:
                    message = self._conn.next_event()
                    if message is _wire.NEED_DATA:
                        break
                    self._dispatch(message)
                if not data:
                    raise AgentError(f"VM {self.name}: the agent channel closed")
        except _wire.RemoteProtocolError as exc:
            self.fail(AgentError(f"VM {self.name}: the agent broke the protocol: {exc}"))
        except (ConnectionError, OSError) as exc:
            self.fail(AgentError(f"VM {self.name}: agent channel broke: {exc}"))
        except CrioError as exc:
            self.fail(exc)

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, _wire.Event) and message.seq:
            if message.seq <= self.last_seq:
                return  # seen before the agent replayed it
            self.last_seq = message.seq
        if isinstance(message, _wire.Reply):
            future = self._pending.get(message.id)
            if future is None or future.done():
                return  # its caller was cancelled
            if message.error is not None:
                future.set_exception(fault_error(message.error, f"VM {self.name}"))
            else:
                future.set_result(message.result or {})
            return
        if message.name == "ready":
            if not self.ready.done():
                self.ready.set_result(message.data)
            return
        for field in ("container_id", "exec_id", "conn_id"):
            if field in message.data:
                listener = self._listeners.get((field, str(message.data[field])))
                if listener is not None:
                    listener(message)
                    return
        if self.default_listener is not None:
            self.default_listener(message)

    def fail(self, error: CrioError) -> None:
        """Fail every pending and future call with ``error`` (the VM died)."""
        if self._failure is None:
            self._failure = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: nobody may be waiting
        if not self.closed.done():
            self.closed.set_result(None)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
        self.fail(AgentError(f"VM {self.name}: agent channel closed"))
