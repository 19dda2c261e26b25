"""Tokens, the HTTP upgrade, the remote-command conventions and the WebSocket channels."""

from __future__ import annotations

import base64
import json

import h11
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, TextMessage
from wsproto.events import Request as WsRequest

from crio.errors import NotFoundError, ResourceExhaustedError
from crio.streaming import handshake, remotecommand
from crio.streaming._errors import LocalProtocolError, RemoteProtocolError
from crio.streaming.remotecommand import StreamType
from crio.streaming.tokens import TokenCache, TokenExpiredError
from crio.streaming.websocket import (
    EXEC_SUBPROTOCOLS,
    ChannelClose,
    ChannelConnection,
    ChannelData,
    Closed,
    Opening,
    choose_subprotocol,
)
from crio.streaming.websocket import (
    NEED_DATA as WS_NEED_DATA,
)

# ----------------------------------------------------------------- tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_is_single_use() -> None:
    cache: TokenCache[str] = TokenCache(Clock())
    token = cache.insert("exec request")
    assert cache.consume(token) == "exec request"
    with pytest.raises(NotFoundError):
        cache.consume(token)
    with pytest.raises(NotFoundError):
        cache.consume("never-issued")


def test_token_expires_after_a_minute() -> None:
    clock = Clock()
    cache: TokenCache[str] = TokenCache(clock)
    fresh, stale = cache.insert("a"), cache.insert("b")
    clock.now += 59.9
    assert cache.consume(fresh) == "a"
    clock.now += 0.1
    with pytest.raises(TokenExpiredError):
        cache.consume(stale)


def test_at_most_1000_pending_and_expired_ones_make_room() -> None:
    clock = Clock()
    cache: TokenCache[int] = TokenCache(clock)
    tokens = [cache.insert(i) for i in range(1000)]
    with pytest.raises(ResourceExhaustedError, match="1000"):
        cache.insert(1000)
    assert cache.consume(tokens[5]) == 5
    cache.insert(1000)  # a consumed token frees its place
    clock.now += 61
    cache.insert(1001)  # all expired: the oldest give way
    assert len(cache) == 1000
    with pytest.raises(NotFoundError):
        cache.consume(tokens[0])  # evicted, so unknown now


def test_tokens_are_unguessable_and_url_safe() -> None:
    cache: TokenCache[None] = TokenCache(Clock())
    tokens = {cache.insert(None) for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) >= 20 and t.replace("-", "").replace("_", "").isalnum() for t in tokens)


# ----------------------------------------------------------------- HTTP upgrade


def request(target: bytes = b"/exec/abc", method: bytes = b"POST", **headers: str) -> h11.Request:
    pairs = [(b"host", b"127.0.0.1:1")]
    for name, value in headers.items():
        for item in value.split("|"):
            pairs.append((name.replace("_", "-").encode(), item.encode()))
    return h11.Request(method=method, target=target, headers=pairs)


def test_routes() -> None:
    route = handshake.parse_route(request(b"/portforward/tok%2Den?port=80&port=443"))
    assert route == handshake.Route("portforward", "tok-en", (("port", "80"), ("port", "443")))
    assert isinstance(route, handshake.Route) and route.query_values("port") == ["80", "443"]
    assert handshake.parse_route(request(b"/exec/")) == handshake.Refusal(
        404, "no streaming endpoint at /exec/"
    )
    assert isinstance(handshake.parse_route(request(b"/logs/x")), handshake.Refusal)
    refused = handshake.parse_route(request(b"/attach/x", method=b"PUT"))
    assert isinstance(refused, handshake.Refusal) and refused.status == 405


def test_upgrade_kinds() -> None:
    spdy = request(connection="Upgrade", upgrade="SPDY/3.1")
    ws = request(connection="keep-alive, Upgrade", upgrade="websocket")
    assert handshake.upgrade_kind(spdy) == "spdy"
    assert handshake.upgrade_kind(ws) == "websocket"
    plain = handshake.upgrade_kind(request())
    assert isinstance(plain, handshake.Refusal) and plain.status == 400
    other = handshake.upgrade_kind(request(connection="upgrade", upgrade="h2c"))
    assert isinstance(other, handshake.Refusal) and other.status == 400


def test_negotiation_follows_the_clients_order() -> None:
    offers = "v2.channel.k8s.io|v4.channel.k8s.io"
    req = request(x_stream_protocol_version=offers)
    assert handshake.negotiate(req, remotecommand.SPDY_EXEC_PROTOCOLS, "channel.k8s.io") == (
        "v2.channel.k8s.io"
    )
    assert handshake.negotiate(request(), remotecommand.SPDY_EXEC_PROTOCOLS, "channel.k8s.io") == (
        "channel.k8s.io"
    )
    refused = handshake.negotiate(
        request(x_stream_protocol_version="v9.channel.k8s.io"), ("portforward.k8s.io",), ""
    )
    assert isinstance(refused, handshake.Refusal) and refused.status == 403
    assert (b"x-accepted-stream-protocol-versions", b"portforward.k8s.io") in refused.headers


def test_spdy_switch_and_refusal_bytes() -> None:
    server = h11.Connection(h11.SERVER)
    server.receive_data(
        b"POST /exec/t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(server.next_event(), h11.Request)
    wire = server.send(handshake.spdy_switch("v4.channel.k8s.io"))
    assert wire is not None
    assert wire.startswith(b"HTTP/1.1 101 ")
    assert (
        b"upgrade: SPDY/3.1\r\n" in wire and b"x-stream-protocol-version: v4.channel.k8s.io" in wire
    )
    events = handshake.refusal_events(handshake.Refusal(404, "gone"))
    assert isinstance(events[0], h11.Response) and events[1] == h11.Data(data=b"gone\n")


# ----------------------------------------------------------------- remote command


def test_expected_streams() -> None:
    v4 = remotecommand.expected_streams(
        "v4.channel.k8s.io", stdin=True, stdout=True, stderr=False, tty=True
    )
    assert v4 == {StreamType.ERROR, StreamType.STDIN, StreamType.STDOUT, StreamType.RESIZE}
    v2 = remotecommand.expected_streams(
        "v2.channel.k8s.io", stdin=False, stdout=True, stderr=True, tty=True
    )
    assert v2 == {StreamType.ERROR, StreamType.STDOUT}  # no resize before v3, no stderr with tty


def test_status_payloads() -> None:
    assert remotecommand.success_status("v4.channel.k8s.io") == b'{"status": "Success"}'
    assert remotecommand.success_status("v3.channel.k8s.io") == b""
    failure = json.loads(remotecommand.exit_code_status("v4.channel.k8s.io", 3))
    assert failure["status"] == "Failure" and failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert remotecommand.exit_code_status("channel.k8s.io", 3).endswith(b"exit status 3")
    internal = json.loads(remotecommand.failure_status("v5.channel.k8s.io", "container gone"))
    assert internal["reason"] == "InternalError" and internal["code"] == 500


def test_resize_decoder_splits_objects_across_chunks() -> None:
    decoder = remotecommand.ResizeDecoder()
    wire = b'{"Width":80,"Height":24}\n{"Width":120,"Height":40}\n{"Width": 1'
    sizes = [size for byte in wire for size in decoder.feed(bytes([byte]))]
    assert sizes == [(80, 24), (120, 40)]
    assert list(decoder.feed(b', "Height": 2}')) == [(1, 2)]
    with pytest.raises(LocalProtocolError):
        list(remotecommand.ResizeDecoder().feed(b"[1, 2]"))
    with pytest.raises(LocalProtocolError):
        list(remotecommand.ResizeDecoder().feed(b'{"Width": -1, "Height": 2}'))


def test_port_forward_pairing() -> None:
    pairing = remotecommand.PortForwardPairing()
    assert pairing.add(1, b"error", b"8080", b"0") is None
    assert pairing.add(3, b"data", b"8080", b"0") == remotecommand.ForwardPair("0", 8080, 3, 1)
    # Old clients without requestID: data follows error by two.
    assert pairing.add(5, b"error", b"22", None) is None
    assert pairing.add(7, b"data", b"22", None) == remotecommand.ForwardPair("5", 22, 7, 5)
    assert pairing.pending() == 0
    with pytest.raises(LocalProtocolError, match="port"):
        pairing.add(9, b"data", b"0", b"1")
    with pytest.raises(LocalProtocolError, match="port"):
        pairing.add(9, b"data", b"http", b"1")
    with pytest.raises(LocalProtocolError, match="stream type"):
        pairing.add(9, b"stdout", b"80", b"1")
    pairing.add(11, b"data", b"80", b"2")
    with pytest.raises(LocalProtocolError, match="two data"):
        pairing.add(13, b"data", b"80", b"2")


# ----------------------------------------------------------------- websocket channels


def ws_pair(subprotocols: list[str]) -> tuple[WSConnection, ChannelConnection, str]:
    client = WSConnection(ConnectionType.CLIENT)
    wire = client.send(WsRequest(host="x", target="/exec/t", subprotocols=subprotocols))
    h11conn = h11.Connection(h11.SERVER)
    h11conn.receive_data(wire)
    req = h11conn.next_event()
    assert isinstance(req, h11.Request)
    server = ChannelConnection(req)
    opening = server.next_event()
    assert isinstance(opening, Opening) and opening.subprotocols == tuple(subprotocols)
    chosen = choose_subprotocol(opening.subprotocols, EXEC_SUBPROTOCOLS)
    assert chosen is not None
    client.receive_data(server.accept(chosen))
    accepted = list(client.events())
    assert isinstance(accepted[0], AcceptConnection)
    return client, server, chosen


def feed_ws(server: ChannelConnection, data: bytes, bytewise: bool) -> list[object]:
    events: list[object] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        server.receive_data(chunk)
        while (event := server.next_event()) is not WS_NEED_DATA:
            events.append(event)
    return events


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_v5_binary_channels_and_stream_close(bytewise: bool) -> None:
    client, server, chosen = ws_pair(["v5.channel.k8s.io", "v4.channel.k8s.io"])
    assert chosen == "v5.channel.k8s.io"
    wire = client.send(BytesMessage(data=b"\x00ls\n")) + client.send(BytesMessage(data=b"\xff\x00"))
    assert feed_ws(server, wire, bytewise) == [ChannelData(0, b"ls\n"), ChannelClose(0)]
    client.receive_data(server.send(1, b"bin\n"))
    (message,) = list(client.events())
    assert isinstance(message, BytesMessage) and message.data == b"\x01bin\n"


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_base64_channels(bytewise: bool) -> None:
    client, server, _ = ws_pair(["v4.base64.channel.k8s.io"])
    stdin = "0" + base64.b64encode(b"hello").decode()
    wire = client.send(TextMessage(data=stdin))
    assert feed_ws(server, wire, bytewise) == [ChannelData(0, b"hello")]
    client.receive_data(server.send(3, b'{"status":"Success"}'))
    (message,) = list(client.events())
    assert isinstance(message, TextMessage)
    assert message.data == "3" + base64.b64encode(b'{"status":"Success"}').decode()
    with pytest.raises(RemoteProtocolError, match="base64"):
        feed_ws(server, client.send(TextMessage(data="0***")), bytewise)


def test_no_subprotocol_means_binary_v1_and_255_is_data_there() -> None:
    client, server, chosen = ws_pair([])
    assert chosen == ""
    wire = client.send(BytesMessage(data=b"\xff\x00"))  # v1 has no stream close
    assert feed_ws(server, wire, False) == [ChannelData(255, b"\x00")]


def test_fragmented_message_is_reassembled() -> None:
    client, server, _ = ws_pair(["v4.channel.k8s.io"])
    wire = client.send(BytesMessage(data=b"\x00ab", message_finished=False))
    wire += client.send(BytesMessage(data=b"cd", message_finished=True))
    assert feed_ws(server, wire, True) == [ChannelData(0, b"abcd")]


def test_close_handshake_both_ways() -> None:
    client, server, _ = ws_pair(["v4.channel.k8s.io"])
    client.receive_data(server.close())
    (event,) = list(client.events())
    assert isinstance(event, CloseConnection)
    assert feed_ws(server, client.send(event.response()), False) == [Closed(1000)]
    client2, server2, _ = ws_pair(["v4.channel.k8s.io"])
    assert feed_ws(server2, client2.send(CloseConnection(code=1000)), False) == [Closed(1000)]
    assert server2.data_to_send()  # the close reply


def test_refused_subprotocol() -> None:
    assert choose_subprotocol(["v9.channel.k8s.io"], EXEC_SUBPROTOCOLS) is None
