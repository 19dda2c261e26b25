"""The agent protocol, sans I/O: both ends connected to each other, whole and byte by byte."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from crio_plugins.runtime_clear import _wire
from crio_plugins.runtime_clear._wire import (
    NEED_DATA,
    BadRequest,
    Connection,
    Event,
    Fault,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Reply,
    Request,
    Role,
)


def feed_whole(conn: Connection, data: bytes) -> list[object]:
    conn.receive_data(data)
    return drain(conn)


def feed_bytewise(conn: Connection, data: bytes) -> list[object]:
    out: list[object] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        out.extend(drain(conn))
    return out


def drain(conn: Connection) -> list[object]:
    out = []
    while (message := conn.next_event()) is not NEED_DATA:
        out.append(message)
    return out


Feed = Callable[[Connection, bytes], list[object]]
FEEDS = [feed_whole, feed_bytewise]


@pytest.fixture
def pair() -> tuple[Connection, Connection]:
    return Connection(Role.HOST), Connection(Role.GUEST)


@pytest.mark.parametrize("feed", FEEDS)
def test_request_reply_round_trip(feed: Feed, pair: tuple[Connection, Connection]) -> None:
    host, guest = pair
    request = Request(host.next_id(), "exec", {"exec_id": "e1", "argv": ["uname", "-r"]})
    assert feed(guest, host.send(request)) == [request]
    assert host.pending == {request.id} and guest.pending == {request.id}
    reply = Reply(request.id, result={"pid": 42})
    assert feed(host, guest.send(reply)) == [reply]
    assert host.pending == frozenset() and guest.pending == frozenset()


@pytest.mark.parametrize("feed", FEEDS)
def test_faults_and_events_round_trip(feed: Feed, pair: tuple[Connection, Connection]) -> None:
    host, guest = pair
    request = Request(7, "start", {"container_id": "c1"})
    feed(guest, host.send(request))
    event = Event("output", {"container_id": "c1", "stream": "stdout", "data": "aGk="})
    fault = Reply(7, error=Fault("not_found", "no container c1"))
    assert feed(host, guest.send(event) + guest.send(fault)) == [event, fault]


@pytest.mark.parametrize("feed", FEEDS)
def test_replies_may_come_in_any_order(feed: Feed, pair: tuple[Connection, Connection]) -> None:
    host, guest = pair
    first = Request(host.next_id(), "wait", {"container_id": "c1"})
    second = Request(host.next_id(), "ping")
    feed(guest, host.send(first) + host.send(second))
    got = feed(
        host, guest.send(Reply(second.id, result={})) + guest.send(Reply(first.id, result={}))
    )
    assert [r.id for r in got] == [second.id, first.id]  # type: ignore[attr-defined]


def test_wire_format_is_one_json_object_per_line(pair: tuple[Connection, Connection]) -> None:
    host, guest = pair
    line = host.send(Request(1, "kill", {"container_id": "c1", "signal": 15}))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"id": 1, "op": "kill", "args": {"container_id": "c1", "signal": 15}}
    guest.receive_data(line)
    guest.next_event()
    assert json.loads(guest.send(Event("ready", {"kernel": "6.1"}))) == {
        "event": "ready",
        "data": {"kernel": "6.1"},
    }
    assert json.loads(guest.send(Reply(1, error=Fault("state", "stopped")))) == {
        "id": 1,
        "error": {"kind": "state", "message": "stopped"},
    }


@pytest.mark.parametrize(
    ("op", "args", "message"),
    [
        ("bogus", {}, "unknown op 'bogus'"),
        ("start", {}, "start: missing argument 'container_id'"),
        ("start", {"container_id": 3}, "'container_id' must be a string"),
        ("start", {"container_id": "c", "extra": 1}, "unknown argument 'extra'"),
        ("kill", {"signal": 9}, "exactly one of 'container_id' and 'exec_id'"),
        ("kill", {"container_id": "c", "exec_id": "e"}, "exactly one of"),
        ("kill", {"container_id": "c", "signal": True}, "'signal' must be a integer"),
        ("exec", {"exec_id": "e", "argv": []}, "non-empty list of strings"),
        ("exec", {"exec_id": "e", "argv": ["ls", 1]}, "non-empty list of strings"),
        ("resize", {"exec_id": "e", "width": 80}, "missing argument 'height'"),
    ],
)
def test_guest_answers_bad_requests_by_id_without_breaking(
    op: str, args: dict[str, object], message: str
) -> None:
    guest = Connection(Role.GUEST)
    guest.receive_data(json.dumps({"id": 5, "op": op, "args": args}).encode() + b"\n")
    bad = guest.next_event()
    assert isinstance(bad, BadRequest) and bad.id == 5 and message in bad.message
    # Answered like any request, and the connection goes on.
    assert json.loads(guest.send(Reply(5, error=Fault("invalid", bad.message))))["id"] == 5
    guest.receive_data(b'{"id": 6, "op": "ping"}\n')
    assert guest.next_event() == Request(6, "ping", {})


def test_the_host_cannot_send_a_request_that_is_not_valid() -> None:
    host = Connection(Role.HOST)
    with pytest.raises(LocalProtocolError, match="missing argument 'container_id'"):
        host.send(Request(1, "start", {}))
    with pytest.raises(LocalProtocolError, match="positive integer"):
        Request(0, "ping")
    assert host.pending == frozenset()


@pytest.mark.parametrize(
    ("role", "line", "message"),
    [
        (Role.GUEST, b"not json\n", "not JSON"),
        (Role.GUEST, b"[1, 2]\n", "not a JSON object"),
        (Role.GUEST, b'{"op": "ping"}\n', "positive integer id"),
        (Role.GUEST, b'{"id": true, "op": "ping"}\n', "positive integer id"),
        (Role.HOST, b'{"id": 9, "result": {}}\n', "not pending"),
        (Role.HOST, b'{"event": "nonsense", "data": {}}\n', "malformed event"),
        (Role.HOST, b'{"event": "exit", "data": []}\n', "malformed event"),
    ],
)
def test_broken_lines_are_remote_protocol_errors_that_stay(
    role: Role, line: bytes, message: str
) -> None:
    conn = Connection(role)
    conn.receive_data(line + b'{"id": 1, "op": "ping"}\n')
    with pytest.raises(RemoteProtocolError, match=message):
        conn.next_event()
    with pytest.raises(RemoteProtocolError, match=message):
        conn.next_event()


def test_reply_shapes_are_checked_on_the_host() -> None:
    host = Connection(Role.HOST)
    host.send(Request(1, "ping"))
    host.receive_data(b'{"id": 1, "error": {"kind": "weird", "message": "x"}}\n')
    with pytest.raises(RemoteProtocolError, match="malformed error"):
        host.next_event()
    host = Connection(Role.HOST)
    host.send(Request(1, "ping"))
    host.receive_data(b'{"id": 1}\n')
    with pytest.raises(RemoteProtocolError, match="neither an error nor a result"):
        host.next_event()


def test_duplicate_ids_are_refused_on_both_sides(pair: tuple[Connection, Connection]) -> None:
    host, guest = pair
    host.send(Request(1, "ping"))
    with pytest.raises(LocalProtocolError, match="already in flight"):
        host.send(Request(1, "ping"))
    guest.receive_data(b'{"id": 1, "op": "ping"}\n{"id": 1, "op": "ping"}\n')
    guest.next_event()
    with pytest.raises(RemoteProtocolError, match="already in flight"):
        guest.next_event()


def test_sides_send_only_their_own_kinds(pair: tuple[Connection, Connection]) -> None:
    host, guest = pair
    with pytest.raises(LocalProtocolError, match="only the host sends requests"):
        guest.send(Request(1, "ping"))
    with pytest.raises(LocalProtocolError, match="only the guest sends replies"):
        host.send(Reply(1, result={}))
    with pytest.raises(LocalProtocolError, match="only the guest sends events"):
        host.send(Event("ready"))
    with pytest.raises(LocalProtocolError, match="not pending"):
        guest.send(Reply(3, result={}))


def test_messages_check_their_fields() -> None:
    with pytest.raises(LocalProtocolError, match="exactly one of result and error"):
        Reply(1)
    with pytest.raises(LocalProtocolError, match="exactly one of result and error"):
        Reply(1, result={}, error=Fault("failed", "x"))
    with pytest.raises(LocalProtocolError, match="fault kind"):
        Fault("oops", "x")
    with pytest.raises(LocalProtocolError, match="event 'hello'"):
        Event("hello")
    with pytest.raises(TypeError, match="abstract"):
        ProtocolError("x")


def test_eof_inside_a_line_is_an_error_and_clean_eof_closes() -> None:
    conn = Connection(Role.HOST)
    conn.receive_data(b'{"event": "ready", "data": {}}\n')
    conn.receive_data(b"")
    assert conn.next_event() == Event("ready", {})
    assert conn.next_event() is NEED_DATA and conn.closed
    conn = Connection(Role.HOST)
    conn.receive_data(b'{"event": "rea')
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a line"):
        conn.next_event()


def test_overlong_lines_are_refused() -> None:
    conn = Connection(Role.HOST)
    conn.receive_data(b"x" * (_wire.MAX_LINE + 1))
    with pytest.raises(RemoteProtocolError, match="longer than"):
        conn.next_event()
    host, guest = Connection(Role.HOST), Connection(Role.GUEST)
    host.send(Request(1, "ping"))
    guest.receive_data(b'{"id": 1, "op": "ping"}\n')
    guest.next_event()
    with pytest.raises(LocalProtocolError, match="exceeds"):
        guest.send(Reply(1, result={"data": "y" * _wire.MAX_LINE}))


@pytest.mark.parametrize("data", [b"", b"\x00\xff binary \n", bytes(range(256)) * 3])
def test_data_encoding_round_trips(data: bytes) -> None:
    assert _wire.decode_data(_wire.encode_data(data)) == data


def test_bad_data_encoding_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not base64"):
        _wire.decode_data("not base64!")
