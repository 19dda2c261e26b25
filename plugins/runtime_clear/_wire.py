"""The agent protocol: one JSON object per line over the pod VM's serial port.

Sans-I/O and standard library only: the guest agent imports this file as a
plain module, the host imports it from the plugin. Bytes go in with
:meth:`Connection.receive_data`, messages come out of
:meth:`Connection.next_event`, messages become bytes with :meth:`Connection.send`.

Three kinds of line::

    {"id": 7, "op": "exec", "args": {"exec_id": "e1", "argv": ["true"]}}   host -> guest
    {"id": 7, "result": {"pid": 42}}                                        guest -> host
    {"id": 7, "error": {"kind": "not_found", "message": "no container c1"}} guest -> host
    {"event": "exit", "seq": 12, "data": {"exec_id": "e1", "exit_code": 0}} guest -> host

Every request is answered exactly once, by id, in whatever order the work
finishes. Events are unsolicited: ``ready`` once at boot, ``output`` (base64
``data`` of one ``stream``), ``closed`` (a stream reached EOF) and ``exit``
for a container or an exec'd process. Output of a process is sent before its
``exit`` event. Events carry a sequence number (``seq``, from 1, never
reused while the agent runs): a host that reconnects asks the agent to
``resume`` after the last one it handled, and drops any it has seen.

A request with a good id but a bad op or arguments is not a protocol
error: the guest answers it with an ``invalid`` fault. Anything that is not
a JSON object with an id (or an event name) is, and ends the connection.
"""

from __future__ import annotations

import base64
import enum
import json

# No typing at run time: the guest imports this module while it boots.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "EVENTS",
    "FAULT_KINDS",
    "MAX_LINE",
    "NEED_DATA",
    "OPS",
    "PROTOCOL_VERSION",
    "BadRequest",
    "Connection",
    "Event",
    "Fault",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "Reply",
    "Request",
    "Role",
    "check_args",
    "decode_data",
    "encode_data",
]

PROTOCOL_VERSION = 1
#: The longest line either side accepts (an ``output`` event carries at most
#: a few hundred KiB; anything near this is a broken peer).
MAX_LINE = 8 << 20


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: :meth:`Connection.next_event` needs more bytes.
NEED_DATA: Any = _Sentinel("NEED_DATA")


class ProtocolError(Exception):
    """A broken protocol rule; use one of the two subclasses."""

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract: raise Local- or RemoteProtocolError")
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids; the connection is unusable."""


class Role(enum.Enum):
    HOST = "host"
    GUEST = "guest"


#: Fault kinds a guest answers with.
FAULT_KINDS = ("invalid", "not_found", "exists", "state", "failed", "unsupported")

# Argument schemas: op -> (required {name: type}, optional {name: type}).
_TARGET = {"container_id": str, "exec_id": str}
OPS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ping": ({}, {}),
    "create": (
        {"container_id": str, "bundle": str},
        {"tty": bool, "stdin": bool, "runtime": str, "guest_devices": bool},
    ),
    "start": ({"container_id": str}, {}),
    "state": ({"container_id": str}, {}),
    "kill": ({}, {**_TARGET, "signal": int, "all": bool}),
    "wait": ({}, dict(_TARGET)),
    "exec": (
        {"exec_id": str, "argv": list},
        {"container_id": str, "env": list, "cwd": str, "tty": bool, "stdin": bool},
    ),
    "stdin": ({"data": str}, dict(_TARGET)),
    "close_stdin": ({}, dict(_TARGET)),
    "resize": ({"width": int, "height": int}, dict(_TARGET)),
    "delete": ({"container_id": str}, {"force": bool}),
    "stats": ({}, {"container_id": str}),
    "update": ({"container_id": str, "resources": dict}, {}),
    "sysctl": ({"values": dict}, {}),
    "shm": ({"size": int}, {}),
    "network": ({"interfaces": list}, {"routes": list, "hostname": str}),
    "modprobe": ({"names": list, "modules_dir": str}, {}),
    "shutdown": ({}, {"timeout": (int, float)}),
    "resume": ({"after": int}, {}),
    "restore": (
        {"time_ns": int, "entropy": str, "machine_id": str, "share_dir": str},
        {"hostname": str, "macs": list, "timeout": (int, float)},
    ),
    "connect": ({"conn_id": str, "port": int}, {}),
    "send": ({"conn_id": str, "data": str}, {}),
    "close": ({"conn_id": str}, {"abort": bool}),
}
#: Ops addressed to one process: exactly one of container_id and exec_id.
_ONE_TARGET = ("kill", "wait", "stdin", "close_stdin", "resize")

EVENTS = ("ready", "output", "closed", "exit")


def _type_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    names = {str: "string", int: "integer", bool: "boolean", list: "list", dict: "object"}
    return names.get(kind, kind.__name__)


def check_args(op: str, args: dict[str, Any]) -> str:
    """Why ``args`` are wrong for ``op``, or "" when they are right."""
    if op not in OPS:
        return f"unknown op {op!r}; expected one of: {', '.join(sorted(OPS))}"
    required, optional = OPS[op]
    for name in required:
        if name not in args:
            return f"{op}: missing argument {name!r}"
    for name, value in args.items():
        kind = required.get(name, optional.get(name))
        if kind is None:
            return f"{op}: unknown argument {name!r}"
        # bool is an int in Python; an int argument must not accept true/false.
        wrong_bool = kind is int and isinstance(value, bool)
        if wrong_bool or not isinstance(value, kind):
            return f"{op}: argument {name!r} must be a {_type_name(kind)}"
    if op in _ONE_TARGET and ("container_id" in args) == ("exec_id" in args):
        return f"{op}: give exactly one of 'container_id' and 'exec_id'"
    if op == "exec" and (not args["argv"] or not all(isinstance(a, str) for a in args["argv"])):
        return "exec: 'argv' must be a non-empty list of strings"
    return ""


def encode_data(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_data(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"not base64: {exc}") from exc


class _Message:
    """Immutable, slotted, compared by value: what a frozen dataclass gives.

    Written out by hand because the guest imports this module at boot, and
    under TCG importing dataclasses (and with it inspect) costs half a second.
    """

    __slots__ = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self._values())))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def _set(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)


class Request(_Message):
    """Host to guest: do ``op`` with ``args``; answered by a :class:`Reply` with the same id."""

    __slots__ = ("args", "id", "op")
    id: int
    op: str
    args: dict[str, Any]

    def __init__(self, id: int, op: str, args: dict[str, Any] | None = None) -> None:
        self._set(id=id, op=op, args={} if args is None else args)
        if isinstance(id, bool) or not isinstance(id, int) or id <= 0:
            raise LocalProtocolError(f"request id must be a positive integer, got {id!r}")
        problem = check_args(op, self.args)
        if problem:
            raise LocalProtocolError(problem)


class Fault(_Message):
    """Why a request failed: a kind from :data:`FAULT_KINDS` and a message."""

    __slots__ = ("kind", "message")
    kind: str
    message: str

    def __init__(self, kind: str, message: str) -> None:
        self._set(kind=kind, message=message)
        if kind not in FAULT_KINDS:
            raise LocalProtocolError(f"fault kind {kind!r} is not one of {FAULT_KINDS}")


class Reply(_Message):
    """Guest to host: the answer to request ``id``, a result or a fault."""

    __slots__ = ("error", "id", "result")
    id: int
    result: dict[str, Any] | None
    error: Fault | None

    def __init__(
        self,
        id: int,
        result: dict[str, Any] | None = None,
        error: Fault | None = None,
    ) -> None:
        self._set(id=id, result=result, error=error)
        if (result is None) == (error is None):
            raise LocalProtocolError("a reply carries exactly one of result and error")


class Event(_Message):
    """Guest to host, unsolicited: ``name`` from :data:`EVENTS` with its data.

    ``seq`` is the agent's sequence number; 0 when the sender does not number events.
    """

    __slots__ = ("data", "name", "seq")
    name: str
    data: dict[str, Any]
    seq: int

    def __init__(self, name: str, data: dict[str, Any] | None = None, seq: int = 0) -> None:
        self._set(name=name, data={} if data is None else data, seq=seq)
        if name not in EVENTS:
            raise LocalProtocolError(f"event {name!r} is not one of {EVENTS}")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise LocalProtocolError(f"event seq must be a non-negative integer, not {seq!r}")


class BadRequest(_Message):
    """What the guest's :meth:`Connection.next_event` yields for a request it must refuse.

    Answer it with ``Reply(id, error=Fault("invalid", message))``.
    """

    __slots__ = ("id", "message")
    id: int
    message: str

    def __init__(self, id: int, message: str) -> None:
        self._set(id=id, message=message)


Message = "Request | Reply | Event"


class Connection:
    """One side of the agent channel.

    The host sends :class:`Request` and receives :class:`Reply` and
    :class:`Event`; the guest the other way round. Both sides track the
    requests in flight: a reply to an id that is not pending is an error.
    """

    def __init__(self, role: Role) -> None:
        self.role = role
        self._buffer = bytearray()
        self._eof = False
        self._pending: set[int] = set()
        self._next_id = 0
        self._broken: ProtocolError | None = None

    @property
    def pending(self) -> frozenset[int]:
        """Ids of requests sent (host) or received (guest) and not yet answered."""
        return frozenset(self._pending)

    @property
    def closed(self) -> bool:
        """The peer's EOF was received and every complete line consumed."""
        return self._eof and not self._buffer

    def next_id(self) -> int:
        """A fresh request id (host side)."""
        self._next_id += 1
        while self._next_id in self._pending:
            self._next_id += 1
        return self._next_id

    # -- sending ------------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """The line for ``message``.

        :raises LocalProtocolError: this side may not send it, or the id is wrong.
        """
        if isinstance(message, Request):
            if self.role is not Role.HOST:
                raise LocalProtocolError("only the host sends requests")
            if message.id in self._pending:
                raise LocalProtocolError(f"request id {message.id} is already in flight")
            self._pending.add(message.id)
            obj: dict[str, Any] = {"id": message.id, "op": message.op, "args": message.args}
        elif isinstance(message, Reply):
            if self.role is not Role.GUEST:
                raise LocalProtocolError("only the guest sends replies")
            if message.id not in self._pending:
                raise LocalProtocolError(f"reply to request {message.id}, which is not pending")
            self._pending.discard(message.id)
            obj = {"id": message.id}
            if message.error is not None:
                obj["error"] = {"kind": message.error.kind, "message": message.error.message}
            else:
                obj["result"] = message.result
        elif isinstance(message, Event):
            if self.role is not Role.GUEST:
                raise LocalProtocolError("only the guest sends events")
            obj = {"event": message.name, "data": message.data}
            if message.seq:
                obj["seq"] = message.seq
        else:
            raise LocalProtocolError(f"cannot send {type(message).__name__}")
        line = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
        if len(line) > MAX_LINE:
            raise LocalProtocolError(f"message of {len(line)} bytes exceeds {MAX_LINE}")
        return line

    # -- receiving ----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if self._eof and data:
            raise RuntimeError("data received after EOF")
        if not data:
            self._eof = True
        self._buffer += data

    def next_event(self) -> Message | BadRequest | Any:
        """The next complete message, or :data:`NEED_DATA`.

        :raises RemoteProtocolError: the peer broke the protocol; it stays raised.
        """
        if self._broken is not None:
            raise self._broken
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE:
                self._fail(f"line longer than {MAX_LINE} bytes")
            if self._eof and self._buffer:
                self._fail("connection closed in the middle of a line")
            return NEED_DATA
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if len(line) > MAX_LINE:
            self._fail(f"line longer than {MAX_LINE} bytes")
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            self._fail(f"line is not JSON: {exc}")
        if not isinstance(obj, dict):
            self._fail(f"line is not a JSON object: {line[:80]!r}")
        return self._host_side(obj) if self.role is Role.HOST else self._guest_side(obj)

    def _fail(self, message: str) -> Any:
        self._broken = RemoteProtocolError(message)
        raise self._broken

    def _guest_side(self, obj: dict[str, Any]) -> Request | BadRequest:
        rid = obj.get("id")
        if isinstance(rid, bool) or not isinstance(rid, int) or rid <= 0:
            self._fail(f"request without a positive integer id: {obj!r:.120}")
        if rid in self._pending:
            self._fail(f"request id {rid} is already in flight")
        self._pending.add(rid)
        op, args = obj.get("op"), obj.get("args", {})
        if not isinstance(op, str):
            return BadRequest(rid, "request without an 'op' string")
        if not isinstance(args, dict):
            return BadRequest(rid, f"{op}: 'args' must be an object")
        problem = check_args(op, args)
        return BadRequest(rid, problem) if problem else Request(rid, op, args)

    def _host_side(self, obj: dict[str, Any]) -> Reply | Event:
        if "event" in obj:
            name, data, seq = obj["event"], obj.get("data", {}), obj.get("seq", 0)
            if name not in EVENTS or not isinstance(data, dict):
                self._fail(f"malformed event: {obj!r:.120}")
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
                self._fail(f"malformed event seq: {obj!r:.120}")
            return Event(name, data, seq)
        rid = obj.get("id")
        if rid not in self._pending:
            self._fail(f"reply to request {rid!r}, which is not pending")
        error = obj.get("error")
        if error is not None:
            if not isinstance(error, dict) or error.get("kind") not in FAULT_KINDS:
                self._fail(f"malformed error in reply {rid}: {error!r:.120}")
            self._pending.discard(rid)
            return Reply(rid, error=Fault(error["kind"], str(error.get("message", ""))))
        result = obj.get("result")
        if not isinstance(result, dict):
            self._fail(f"reply {rid} has neither an error nor a result object")
        self._pending.discard(rid)
        return Reply(rid, result=result)
