"""SPDY/3.1 sans-I/O: frames byte for byte, both ends connected, whole and byte at a time."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sansio_feed import Feed, drain, feed_bytewise, feed_whole

from crio.streaming._dictionary import SPDY3_DICTIONARY
from crio.streaming.spdy import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    GoAway,
    GoAwayStatus,
    Headers,
    LocalProtocolError,
    Ping,
    RemoteProtocolError,
    Role,
    RstStatus,
    RstStream,
    Setting,
    SettingId,
    Settings,
    SpdyConnection,
    SynReply,
    SynStream,
    WindowUpdate,
)
from support.spdy_client import spec_dictionary

CLIENT, SERVER = Role.CLIENT, Role.SERVER
HEADERS = ((b"streamtype", b"stdout"), (b"port", b"8080"))


def pair() -> tuple[SpdyConnection, SpdyConnection]:
    return SpdyConnection(CLIENT), SpdyConnection(SERVER)


def control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8003, kind, (flags << 24) | len(payload)) + payload


def raw_block(pairs: tuple[tuple[bytes, bytes], ...]) -> bytes:
    out = struct.pack(">I", len(pairs))
    for name, value in pairs:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return out


# ----------------------------------------------------------------- the dictionary


def test_dictionary_matches_the_spec_text_and_its_dictid() -> None:
    assert spec_dictionary() == SPDY3_DICTIONARY
    assert len(SPDY3_DICTIONARY) == 1423
    # Every SPDY/3 header block's zlib header carries this DICTID.
    assert zlib.adler32(SPDY3_DICTIONARY) == 0xE3C6A7C2


# ----------------------------------------------------------------- byte-exact frames


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (Ping(1), control(6, 0, b"\0\0\0\x01")),
        (RstStream(3, RstStatus.CANCEL), control(3, 0, b"\0\0\0\x03\0\0\0\x05")),
        (GoAway(7, GoAwayStatus.PROTOCOL_ERROR), control(7, 0, b"\0\0\0\x07\0\0\0\x01")),
        (WindowUpdate(0, 65536), control(9, 0, b"\0\0\0\0\0\x01\0\0")),
        (
            Settings((Setting(SettingId.INITIAL_WINDOW_SIZE, 1 << 20, flags=1),), clear=True),
            control(4, 1, b"\0\0\0\x01" + b"\x01\0\0\x07" + b"\0\x10\0\0"),
        ),
        (Data(5, b"hello", fin=True), b"\0\0\0\x05\x01\0\0\x05hello"),
        (Data(2, b""), b"\0\0\0\x02\0\0\0\0"),
    ],
)
def test_frames_byte_for_byte(event: object, wire: bytes, feed: Feed) -> None:
    sender, receiver = SpdyConnection(SERVER), SpdyConnection(CLIENT)
    if isinstance(event, Data):
        sender, receiver = SpdyConnection(CLIENT, enforce_windows=False), SpdyConnection(SERVER)
        sid = event.stream_id
        opener = SpdyConnection(CLIENT if sid % 2 else SERVER)
        receiver = SpdyConnection(SERVER if sid % 2 else CLIENT)
        sender = opener
        feed(receiver, sender.send(SynStream(sid)))
    assert sender.send(event) == wire  # type: ignore[arg-type]
    assert feed(receiver, wire) == [event]


def test_syn_stream_layout_and_compressed_block(feed: Feed) -> None:
    client, server = pair()
    wire = client.send(SynStream(1, HEADERS, priority=3, slot=0, unidirectional=True))
    kind, flags_len = struct.unpack(">I", wire[:4])[0], struct.unpack(">I", wire[4:8])[0]
    assert kind == 0x80030001
    assert flags_len >> 24 == 0x02  # FLAG_UNIDIRECTIONAL
    assert flags_len & 0xFFFFFF == len(wire) - 8
    assert wire[8:18] == b"\0\0\0\x01" + b"\0\0\0\0" + bytes([3 << 5, 0])
    block = wire[18:]
    # zlib header with FDICT set, then the SPDY/3 DICTID.
    assert block[0] == 0x78 and block[1] & 0x20
    assert block[2:6] == bytes.fromhex("e3c6a7c2")
    inflater = zlib.decompressobj(zdict=spec_dictionary())
    assert inflater.decompress(block) == raw_block(HEADERS)
    assert feed(server, wire) == [SynStream(1, HEADERS, priority=3, unidirectional=True)]


def test_decodes_blocks_deflated_by_another_zlib_setting(feed: Feed) -> None:
    # Chrome deflated with an 11-bit window (zlib header 38 ea); any valid stream must do.
    deflater = zlib.compressobj(9, zlib.DEFLATED, 11, 8, zlib.Z_DEFAULT_STRATEGY, spec_dictionary())
    first = deflater.compress(raw_block(HEADERS)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    second_pairs = ((b"streamtype", b"error"),)
    second = deflater.compress(raw_block(second_pairs)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert first[:2] == b"\x38\xea"
    wire = control(1, 0, b"\0\0\0\x01\0\0\0\0\0\0" + first)
    wire += control(1, 1, b"\0\0\0\x03\0\0\0\0\0\0" + second)
    server = SpdyConnection(SERVER)
    assert feed(server, wire) == [SynStream(1, HEADERS), SynStream(3, second_pairs, fin=True)]


def test_multi_valued_headers_keep_their_nul_separators(feed: Feed) -> None:
    client, server = pair()
    sent = SynStream(1, ((b"x-stream-protocol-version", b"v4.channel.k8s.io\0channel.k8s.io"),))
    assert feed(server, client.send(sent)) == [sent]


def test_header_context_spans_frames_and_both_directions(feed: Feed) -> None:
    client, server = pair()
    for sid in (1, 3, 5):
        opened = SynStream(sid, ((b"streamtype", b"stdin"), (b"n", str(sid).encode())))
        assert feed(server, client.send(opened)) == [opened]
        reply = SynReply(sid, ((b"ok", b"1"),))
        assert feed(client, server.send(reply)) == [reply]
    more = Headers(3, ((b"trailer", b"x"),), fin=True)
    assert feed(server, client.send(more)) == [more]


@given(
    headers=st.lists(
        st.tuples(
            st.binary(min_size=1, max_size=20).map(lambda b: b.lower()),
            st.binary(max_size=40).filter(lambda v: b"\0" not in v),
        ),
        max_size=8,
        unique_by=lambda kv: kv[0],
    ),
    payload=st.binary(max_size=3000),
)
def test_parse_render_round_trip(headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
    for feeder in (feed_whole, feed_bytewise):
        client, server = pair()
        events = [SynStream(1, tuple(headers)), Data(1, payload, fin=True)]
        wire = b"".join(client.send(event) for event in events)
        assert feeder(server, wire) == events


# ----------------------------------------------------------------- streams


def test_exec_shaped_session(feed: Feed) -> None:
    client, server = pair()
    wire = b"".join(
        client.send(SynStream(sid, ((b"streamtype", kind),)))
        for sid, kind in ((1, b"error"), (3, b"stdin"), (5, b"stdout"))
    )
    assert [e.stream_id for e in feed(server, wire)] == [1, 3, 5]
    replies = b"".join(server.send(SynReply(sid)) for sid in (1, 3, 5))
    assert feed(client, replies) == [SynReply(1), SynReply(3), SynReply(5)]
    assert feed(server, client.send(Data(3, b"ls\n", fin=True))) == [Data(3, b"ls\n", fin=True)]
    assert not server.is_open(3, local=False) and server.is_open(3, local=True)
    out = server.send(Data(5, b"bin\n", fin=True)) + server.send(Data(3, b"", fin=True))
    assert feed(client, out) == [Data(5, b"bin\n", fin=True), Data(3, b"", fin=True)]
    status = server.send(Data(1, b'{"status":"Success"}', fin=True))
    assert feed(client, status) == [Data(1, b'{"status":"Success"}', fin=True)]
    assert feed(client, server.send(GoAway(5))) == [GoAway(5)]
    assert client.goaway_received and server.goaway_sent
    assert 3 not in server.stream_ids() and 1 in server.stream_ids()


def test_unknown_control_frame_is_ignored(feed: Feed) -> None:
    server = SpdyConnection(SERVER)
    wire = control(10, 0, b"\0" * 12) + control(6, 0, b"\0\0\0\x05")  # CREDENTIAL, then PING
    assert feed(server, wire) == [Ping(5)]


def test_eof_gives_connection_closed() -> None:
    server = SpdyConnection(SERVER)
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()
    assert server.next_event() == ConnectionClosed()


def test_eof_inside_a_frame_is_a_remote_error() -> None:
    server = SpdyConnection(SERVER)
    server.receive_data(control(6, 0, b"\0\0\0\x05")[:7])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        server.next_event()


# ----------------------------------------------------------------- peer errors


def _stream_error(server: SpdyConnection, wire: bytes, feed: Feed) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        feed(server, wire)
    assert info.value.stream_id != 0
    return info.value


def test_data_for_a_stream_never_opened(feed: Feed) -> None:
    error = _stream_error(SpdyConnection(SERVER), b"\0\0\0\x09\0\0\0\x01x", feed)
    assert (error.stream_id, error.code) == (9, RstStatus.INVALID_STREAM)


def test_data_after_fin_is_stream_already_closed(feed: Feed) -> None:
    client, server = pair()
    feed(server, client.send(SynStream(1, fin=True)))
    error = _stream_error(server, b"\0\0\0\x01\0\0\0\x01x", feed)
    assert (error.stream_id, error.code) == (1, RstStatus.STREAM_ALREADY_CLOSED)


def test_frames_for_a_stream_we_reset_are_dropped(feed: Feed) -> None:
    client, server = pair()
    feed(server, client.send(SynStream(1)))
    server.send(RstStream(1, RstStatus.REFUSED_STREAM))
    late = client.send(Data(1, b"late")) + client.send(Ping(3))
    assert feed(server, late) == [Ping(3)]


def test_duplicate_stream_is_stream_in_use_and_session_goes_on(feed: Feed) -> None:
    client, server = pair()
    wire = client.send(SynStream(1))
    feed(server, wire)
    again = control(1, 0, b"\0\0\0\x01\0\0\0\0\0\0" + _deflate_like_peer(client))
    error = _stream_error(server, again, feed)
    assert error.code == RstStatus.STREAM_IN_USE
    assert feed(server, client.send(SynStream(3))) == [SynStream(3)]


def _deflate_like_peer(client: SpdyConnection) -> bytes:
    # The next block from the client's own compression context.
    return client._compressor.compress(())


def test_decreasing_stream_id_is_a_session_error(feed: Feed) -> None:
    client, server = pair()
    feed(server, client.send(SynStream(5)))
    wire = control(1, 0, b"\0\0\0\x03\0\0\0\0\0\0" + client._compressor.compress(()))
    with pytest.raises(RemoteProtocolError) as info:
        feed(server, wire)
    assert (info.value.stream_id, info.value.code) == (0, GoAwayStatus.PROTOCOL_ERROR)
    with pytest.raises(RemoteProtocolError):
        server.next_event()  # the session stays in ERROR
    assert server.send(GoAway(5, GoAwayStatus.PROTOCOL_ERROR))


def test_uppercase_header_is_a_stream_error_and_context_stays_in_step(feed: Feed) -> None:
    client, server = pair()
    bad = client._compressor.compress(((b"StreamType", b"stdout"),))
    error = _stream_error(server, control(1, 0, b"\0\0\0\x01\0\0\0\0\0\0" + bad), feed)
    assert (error.stream_id, error.code) == (1, RstStatus.PROTOCOL_ERROR)
    client._last_local_id = 1
    good = SynStream(3, HEADERS)
    assert feed(server, client.send(good)) == [good]


def test_stream_opened_with_the_servers_parity(feed: Feed) -> None:
    server = SpdyConnection(SERVER)
    rogue = SpdyConnection(SERVER)  # its compressor stands in for a misbehaving client
    with pytest.raises(RemoteProtocolError) as info:
        feed(server, rogue.send(SynStream(2)))
    assert info.value.stream_id == 0


def test_header_bomb_is_refused(feed: Feed) -> None:
    client = SpdyConnection(CLIENT)
    server = SpdyConnection(SERVER, max_header_block=1024)
    with pytest.raises(RemoteProtocolError, match="inflates to more than"):
        feed(server, client.send(SynStream(1, ((b"x", b"a" * 4096),))))


def test_wrong_version_is_a_session_error(feed: Feed) -> None:
    wire = struct.pack(">HHI", 0x8002, 6, 4) + b"\0\0\0\x01"
    with pytest.raises(RemoteProtocolError, match="version 2"):
        feed(SpdyConnection(SERVER), wire)


def test_second_syn_reply_is_stream_in_use(feed: Feed) -> None:
    client, server = pair()
    feed(server, client.send(SynStream(1)))
    reply = server.send(SynReply(1))
    forged = control(2, 0, b"\0\0\0\x01" + server._compressor.compress(()))
    feed(client, reply)
    error = _stream_error(client, forged, feed)
    assert error.code == RstStatus.STREAM_IN_USE


# ----------------------------------------------------------------- local errors


def test_local_misuse_raises_local_protocol_error() -> None:
    client, server = pair()
    with pytest.raises(LocalProtocolError):
        client.send(SynStream(2))  # even ids are the server's
    client.send(SynStream(3))
    with pytest.raises(LocalProtocolError):
        client.send(SynStream(1))  # ids must grow
    with pytest.raises(LocalProtocolError):
        client.send(SynReply(3))  # our own stream
    with pytest.raises(LocalProtocolError):
        server.send(Data(3, b"x"))  # the server never saw stream 3
    client.send(Data(3, b"", fin=True))
    with pytest.raises(LocalProtocolError):
        client.send(Data(3, b"more"))  # half-closed
    with pytest.raises(LocalProtocolError):
        SynStream(1, ((b"Upper", b"x"),))
    with pytest.raises(LocalProtocolError):
        SynStream(1, ((b"a", b"1"), (b"a", b"2")))
    with pytest.raises(LocalProtocolError):
        WindowUpdate(1, 0)
    with pytest.raises(LocalProtocolError):
        SynStream(0)


def test_no_new_streams_after_goaway(feed: Feed) -> None:
    client, server = pair()
    feed(client, server.send(GoAway(0)))
    with pytest.raises(LocalProtocolError, match="GOAWAY"):
        client.send(SynStream(1))


def test_streams_after_our_goaway_are_ignored(feed: Feed) -> None:
    client, server = pair()
    server.send(GoAway(0))
    wire = client.send(SynStream(1, HEADERS)) + client.send(Ping(1))
    assert feed(server, wire) == [Ping(1)]


# ----------------------------------------------------------------- flow control


def test_send_window_is_enforced_and_reopened(feed: Feed) -> None:
    client, server = pair()
    feed(server, client.send(SynStream(1)))
    feed(client, server.send(SynReply(1)))
    chunk = b"x" * 16384
    for _ in range(4):
        server.send(Data(1, chunk))
    assert server.send_window(1) == 0
    with pytest.raises(LocalProtocolError, match="exceeds window"):
        server.send(Data(1, b"x"))
    # The client consumes what arrived; its acknowledgement reopens both windows.
    updates = b""
    for _ in range(4):
        updates += client.acknowledge(1, len(chunk))
    events = feed(server, updates)
    assert WindowUpdate(1, 32768) in events and WindowUpdate(0, 32768) in events
    assert server.send_window(1) == 65536
    assert server.peer_flow_control


def test_receive_window_overrun_is_a_flow_control_error(feed: Feed) -> None:
    client = SpdyConnection(CLIENT, enforce_windows=False)
    server = SpdyConnection(SERVER)
    feed(server, client.send(SynStream(1)))
    wire = client.send(Data(1, b"y" * 65536)) + client.send(Data(1, b"z"))
    with pytest.raises(RemoteProtocolError) as info:
        feed(server, wire)
    # The session window overflows together with the stream's: a session error.
    assert info.value.code in (RstStatus.FLOW_CONTROL_ERROR, GoAwayStatus.PROTOCOL_ERROR)


def test_stream_window_overrun_with_a_larger_session_window(feed: Feed) -> None:
    client = SpdyConnection(CLIENT, enforce_windows=False)
    server = SpdyConnection(SERVER)
    server.send(WindowUpdate(0, 1 << 20))
    feed(server, client.send(SynStream(1)))
    wire = client.send(Data(1, b"y" * 65537))
    error = _stream_error(server, wire, feed)
    assert (error.stream_id, error.code) == (1, RstStatus.FLOW_CONTROL_ERROR)


def test_initial_window_setting_moves_open_streams(feed: Feed) -> None:
    client, server = pair()
    feed(server, client.send(SynStream(1)))
    feed(client, server.send(SynReply(1)))
    feed(client, server.send(Data(1, b"a" * 1000)))
    setting = Settings((Setting(SettingId.INITIAL_WINDOW_SIZE, 1000),))
    feed(server, client.send(setting))
    assert server.send_window(1) == 0  # 65536 - 1000 + (1000 - 65536)
    assert client.recv_window(1) == 0


def test_without_enforcement_windows_go_negative_and_nothing_raises(feed: Feed) -> None:
    # What a spdystream peer (kubelet, kubectl, crictl) does: ignore windows.
    client = SpdyConnection(CLIENT, enforce_windows=False)
    server = SpdyConnection(SERVER, enforce_windows=False)
    feed(server, client.send(SynStream(1)))
    feed(client, server.send(SynReply(1)))
    big = b"q" * 100_000
    assert feed(client, server.send(Data(1, big))) == [Data(1, big)]
    assert server.send_window(1) == 65536 - 100_000
    assert client.recv_window(1) == 65536 - 100_000
    assert not server.peer_flow_control


def test_window_update_for_a_finished_stream_is_dropped(feed: Feed) -> None:
    client, server = pair()
    feed(server, client.send(SynStream(1, fin=True)))
    feed(client, server.send(SynReply(1, fin=True)))
    assert feed(server, client.send(WindowUpdate(1, 10))) == []


def test_drain_helper_stops_at_need_data() -> None:
    server = SpdyConnection(SERVER)
    assert drain(server) == []
