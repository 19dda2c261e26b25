"""SPDY/3.1, sans-I/O: bytes in, events out; events in, bytes out.

:class:`SpdyConnection` never touches a socket or a clock, after h11's
``Connection``: :meth:`~SpdyConnection.receive_data` takes what the peer
sent, :meth:`~SpdyConnection.next_event` hands out one event at a time (or
:data:`NEED_DATA`), :meth:`~SpdyConnection.send` turns an event into bytes.
It tracks every stream's half-closed state and both flow-control windows.

Errors follow h11: an illegal request from the caller raises
:class:`LocalProtocolError`; illegal input from the peer raises
:class:`RemoteProtocolError` from ``next_event``. Its ``stream_id`` says how
bad it is: non-zero is a stream error (the stream is closed; send
``RstStream(stream_id, code)`` and go on), zero is a session error (the
connection is in ERROR; send ``GoAway(status=code)`` and close).

Flow control (SPDY/3.1 section 2.6.8): every stream and the session start
with 64 KiB windows. With ``enforce_windows=True`` (the spec) sending past
the peer's window is a LocalProtocolError and receiving past ours a
FLOW_CONTROL_ERROR. The kubelet, kubectl and crictl speak SPDY through
moby/spdystream, which neither sends WINDOW_UPDATE nor honours it, so a
server for them passes ``enforce_windows=False``: windows are still counted
(and may go negative), and :attr:`peer_flow_control` tells whether the peer
has ever shown that it does flow control (a SETTINGS or WINDOW_UPDATE).
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass

from crio.streaming._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from crio.streaming._spdy_events import (
    MAX_WINDOW,
    ConnectionClosed,
    Data,
    Event,
    GoAway,
    GoAwayStatus,
    HeaderBlock,
    Headers,
    Ping,
    RstStatus,
    RstStream,
    Setting,
    SettingId,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
    header_value,
    make_headers,
)
from crio.streaming._spdy_frames import (
    FRAME_HEADER,
    HeaderCompressor,
    HeaderDecompressor,
    decode_frame,
    encode_frame,
    frame_length,
)

__all__ = [
    "DEFAULT_WINDOW",
    "NEED_DATA",
    "ConnectionClosed",
    "Data",
    "Event",
    "GoAway",
    "GoAwayStatus",
    "HeaderBlock",
    "Headers",
    "LocalProtocolError",
    "Ping",
    "ProtocolError",
    "RemoteProtocolError",
    "Role",
    "RstStatus",
    "RstStream",
    "Setting",
    "SettingId",
    "Settings",
    "SpdyConnection",
    "SynReply",
    "SynStream",
    "WindowUpdate",
    "header_value",
    "make_headers",
]

DEFAULT_WINDOW = 64 * 1024
#: How many streams we reset are remembered, so late frames for them are dropped quietly.
_RESET_MEMORY = 1024


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: ``next_event`` returns this when it needs more bytes from the peer.
NEED_DATA = _NeedData()


class Role(enum.Enum):
    """Which end we are: clients open odd streams, servers even ones."""

    CLIENT = 1
    SERVER = 2


@dataclass(slots=True)
class _Stream:
    stream_id: int
    local: bool  # opened by us
    local_open: bool  # we may still send
    remote_open: bool  # the peer may still send
    replied: bool  # SYN_REPLY sent (peer's stream) or received (ours)
    send_window: int
    recv_window: int
    unacked: int = 0  # bytes consumed by the caller, not yet given back


class SpdyConnection:
    """One SPDY/3.1 session, either end. Not thread-safe; no I/O."""

    def __init__(
        self,
        role: Role,
        *,
        enforce_windows: bool = True,
        max_header_block: int = 256 * 1024,
    ) -> None:
        self.role = role
        self.enforce_windows = enforce_windows
        self._in = bytearray()
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._compressor = HeaderCompressor()
        self._decompressor = HeaderDecompressor(max_header_block)
        self._streams: dict[int, _Stream] = {}
        self._last_local_id = 0
        self._last_remote_id = 0
        self._reset: collections.deque[int] = collections.deque(maxlen=_RESET_MEMORY)
        self.goaway_sent = False
        self.goaway_received = False
        #: True once the peer sent SETTINGS or WINDOW_UPDATE: it does flow control.
        self.peer_flow_control = False
        self._peer_initial_window = DEFAULT_WINDOW
        self._local_initial_window = DEFAULT_WINDOW
        self._session_send = DEFAULT_WINDOW
        self._session_recv = DEFAULT_WINDOW
        self._session_unacked = 0

    # ---------------------------------------------------------------- inspection

    @property
    def last_remote_stream_id(self) -> int:
        """The newest stream the peer opened (what GOAWAY names as last good)."""
        return self._last_remote_id

    def stream_ids(self) -> list[int]:
        """Streams not yet closed in both directions."""
        return sorted(self._streams)

    def send_window(self, stream_id: int) -> int:
        """How many DATA bytes the peer's windows allow now (may be <= 0)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        return min(stream.send_window, self._session_send)

    def recv_window(self, stream_id: int = 0) -> int:
        """Our advertised receive window for a stream (0: the session)."""
        if stream_id == 0:
            return self._session_recv
        stream = self._streams.get(stream_id)
        return stream.recv_window if stream is not None else 0

    def is_open(self, stream_id: int, *, local: bool) -> bool:
        """Whether we (``local``) or the peer may still send on the stream."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return False
        return stream.local_open if local else stream.remote_open

    # ---------------------------------------------------------------- receiving

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed (EOF)."""
        if data:
            if self._eof:
                raise LocalProtocolError("received data after EOF")
            self._in += data
        else:
            self._eof = True

    def next_event(self) -> Event | _NeedData:
        """Parse the next event from the bytes received so far.

        Returns:
            An event, or NEED_DATA when no complete frame is buffered. After
            EOF every call returns ConnectionClosed.

        Raises:
            RemoteProtocolError: the peer broke the protocol; see the module
            docstring for stream and session errors. Any other exception is a bug.
        """
        if self._error is not None:
            raise self._error
        try:
            while True:
                if len(self._in) < FRAME_HEADER or len(self._in) < FRAME_HEADER + frame_length(
                    self._in
                ):
                    if not self._eof:
                        return NEED_DATA
                    if self._in:
                        raise LocalProtocolError("connection closed in the middle of a frame")
                    return ConnectionClosed()
                size = FRAME_HEADER + frame_length(self._in)
                frame = bytes(self._in[:size])
                del self._in[:size]
                event = decode_frame(frame, self._decompressor)
                if event is not None:
                    event = self._received(event)
                if event is not None:
                    return event
        except LocalProtocolError as exc:
            remote = exc._reraise_as_remote()
            if remote.stream_id == 0:
                remote.code = remote.code or GoAwayStatus.PROTOCOL_ERROR
                self._error = remote
            else:
                self._forget(remote.stream_id, reset=True)
            raise remote from None

    def _received(self, event: Event) -> Event | None:
        """Apply a decoded event to the state; None drops it (frames for reset streams)."""
        if isinstance(event, Data):
            return self._received_data(event)
        if isinstance(event, SynStream):
            return self._received_syn_stream(event)
        if isinstance(event, SynReply | Headers):
            return self._received_headers(event)
        if isinstance(event, RstStream):
            self._forget(event.stream_id, reset=False)
            return event
        if isinstance(event, WindowUpdate):
            return self._received_window_update(event)
        if isinstance(event, Settings):
            self.peer_flow_control = True
            for entry in event.entries:
                if entry.id == SettingId.INITIAL_WINDOW_SIZE:
                    delta = entry.value - self._peer_initial_window
                    self._peer_initial_window = entry.value
                    for stream in self._streams.values():
                        stream.send_window += delta
            return event
        if isinstance(event, GoAway):
            self.goaway_received = True
        return event

    def _peer_parity(self, stream_id: int) -> bool:
        odd = stream_id % 2 == 1
        return odd if self.role is Role.SERVER else not odd

    def _closed_stream_error(self, stream_id: int, what: str) -> LocalProtocolError:
        last = self._last_remote_id if self._peer_parity(stream_id) else self._last_local_id
        if stream_id > last:
            return LocalProtocolError(
                f"{what} for stream {stream_id}, which was never opened",
                stream_id=stream_id,
                code=RstStatus.INVALID_STREAM,
            )
        return LocalProtocolError(
            f"{what} for stream {stream_id}, which the peer already closed",
            stream_id=stream_id,
            code=RstStatus.STREAM_ALREADY_CLOSED,
        )

    def _received_syn_stream(self, event: SynStream) -> Event | None:
        sid = event.stream_id
        if not self._peer_parity(sid):
            raise LocalProtocolError(f"peer opened stream {sid} with our parity", code=1)
        if sid in self._streams:
            raise LocalProtocolError(
                f"stream {sid} opened twice", stream_id=sid, code=RstStatus.STREAM_IN_USE
            )
        if sid <= self._last_remote_id:
            raise LocalProtocolError(
                f"stream {sid} opened after stream {self._last_remote_id}", code=1
            )
        self._last_remote_id = sid
        if self.goaway_sent:
            return None  # after GOAWAY new streams are ignored (section 2.6.6)
        self._streams[sid] = _Stream(
            sid,
            local=False,
            local_open=not event.unidirectional,
            remote_open=not event.fin,
            replied=False,
            send_window=self._peer_initial_window,
            recv_window=self._local_initial_window,
        )
        self._maybe_done(sid)
        return event

    def _received_headers(self, event: SynReply | Headers) -> Event | None:
        sid = event.stream_id
        stream = self._streams.get(sid)
        name = type(event).__name__
        if stream is None or not stream.remote_open:
            if sid in self._reset:
                return None
            raise self._closed_stream_error(sid, name)
        if isinstance(event, SynReply):
            if not stream.local:
                raise LocalProtocolError(
                    f"SYN_REPLY for stream {sid}, which the peer opened",
                    stream_id=sid,
                    code=RstStatus.PROTOCOL_ERROR,
                )
            if stream.replied:
                raise LocalProtocolError(
                    f"second SYN_REPLY for stream {sid}",
                    stream_id=sid,
                    code=RstStatus.STREAM_IN_USE,
                )
            stream.replied = True
        elif stream.local and not stream.replied:
            raise LocalProtocolError(
                f"HEADERS before SYN_REPLY on stream {sid}",
                stream_id=sid,
                code=RstStatus.PROTOCOL_ERROR,
            )
        if event.fin:
            stream.remote_open = False
            self._maybe_done(sid)
        return event

    def _received_data(self, event: Data) -> Event | None:
        sid, size = event.stream_id, len(event.data)
        self._session_recv -= size
        if self.enforce_windows and self._session_recv < 0:
            raise LocalProtocolError(
                f"DATA overran the session window by {-self._session_recv} bytes", code=1
            )
        stream = self._streams.get(sid)
        if stream is None or not stream.remote_open:
            self._session_unacked += size  # never delivered: give the bytes back at once
            if sid in self._reset:
                return None
            raise self._closed_stream_error(sid, "DATA")
        if stream.local and not stream.replied:
            raise LocalProtocolError(
                f"DATA before SYN_REPLY on stream {sid}",
                stream_id=sid,
                code=RstStatus.PROTOCOL_ERROR,
            )
        stream.recv_window -= size
        if self.enforce_windows and stream.recv_window < 0:
            raise LocalProtocolError(
                f"DATA overran the window of stream {sid} by {-stream.recv_window} bytes",
                stream_id=sid,
                code=RstStatus.FLOW_CONTROL_ERROR,
            )
        if event.fin:
            stream.remote_open = False
            self._maybe_done(sid)
        return event

    def _received_window_update(self, event: WindowUpdate) -> Event | None:
        self.peer_flow_control = True
        if event.stream_id == 0:
            self._session_send += event.delta
            if self._session_send > MAX_WINDOW:
                raise LocalProtocolError("session window grew past 2^31-1", code=1)
            return event
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return None  # the stream finished while the update was in flight
        stream.send_window += event.delta
        if stream.send_window > MAX_WINDOW:
            raise LocalProtocolError(
                f"window of stream {event.stream_id} grew past 2^31-1",
                stream_id=event.stream_id,
                code=RstStatus.FLOW_CONTROL_ERROR,
            )
        return event

    # ---------------------------------------------------------------- sending

    def send(self, event: Event) -> bytes:
        """Turn one event into the bytes to write, updating the state.

        Raises:
            LocalProtocolError: the event is not allowed now (wrong stream,
            closed side, exhausted window with ``enforce_windows``...).
        """
        if self._error is not None and not isinstance(event, GoAway | RstStream):
            raise LocalProtocolError("connection is in ERROR; only GOAWAY or RST_STREAM allowed")
        if isinstance(event, ConnectionClosed):
            raise LocalProtocolError("ConnectionClosed is not sent; close the transport")
        self._sending(event)
        return encode_frame(event, self._compressor)

    def _sending(self, event: Event) -> None:
        if isinstance(event, SynStream):
            self._send_syn_stream(event)
        elif isinstance(event, SynReply | Headers | Data):
            self._send_on_stream(event)
        elif isinstance(event, RstStream):
            self._forget(event.stream_id, reset=True)
        elif isinstance(event, WindowUpdate):
            if event.stream_id == 0:
                self._session_recv += event.delta
            elif event.stream_id in self._streams:
                self._streams[event.stream_id].recv_window += event.delta
        elif isinstance(event, Settings):
            for entry in event.entries:
                if entry.id == SettingId.INITIAL_WINDOW_SIZE:
                    delta = entry.value - self._local_initial_window
                    self._local_initial_window = entry.value
                    for stream in self._streams.values():
                        stream.recv_window += delta
        elif isinstance(event, GoAway):
            self.goaway_sent = True

    def _send_syn_stream(self, event: SynStream) -> None:
        sid = event.stream_id
        if self._peer_parity(sid):
            raise LocalProtocolError(
                f"stream {sid} has the peer's parity; we are the {self.role.name}"
            )
        if sid <= self._last_local_id:
            raise LocalProtocolError(f"stream {sid} does not follow stream {self._last_local_id}")
        if self.goaway_received:
            raise LocalProtocolError("the peer sent GOAWAY: no new streams")
        self._last_local_id = sid
        self._streams[sid] = _Stream(
            sid,
            local=True,
            local_open=not event.fin,
            remote_open=not event.unidirectional,
            replied=False,
            send_window=self._peer_initial_window,
            recv_window=self._local_initial_window,
        )
        self._maybe_done(sid)

    def _send_on_stream(self, event: SynReply | Headers | Data) -> None:
        sid, name = event.stream_id, type(event).__name__
        stream = self._streams.get(sid)
        if stream is None or not stream.local_open:
            raise LocalProtocolError(f"{name} on stream {sid}, which we may no longer send on")
        if isinstance(event, SynReply):
            if stream.local or stream.replied:
                raise LocalProtocolError(f"SYN_REPLY for stream {sid} is not ours to send")
            stream.replied = True
        elif not stream.local and not stream.replied:
            raise LocalProtocolError(f"{name} on stream {sid} before its SYN_REPLY")
        if isinstance(event, Data):
            size = len(event.data)
            if self.enforce_windows and size > self.send_window(sid):
                raise LocalProtocolError(
                    f"DATA of {size} bytes exceeds window {self.send_window(sid)} of stream {sid}"
                )
            stream.send_window -= size
            self._session_send -= size
        if event.fin:
            stream.local_open = False
            self._maybe_done(sid)

    def acknowledge(self, stream_id: int, size: int) -> bytes:
        """The caller consumed ``size`` DATA bytes of a stream: reopen the windows.

        Returns the WINDOW_UPDATE frames to send, once half a window has been
        consumed (b"" until then).
        """
        out = b""
        self._session_unacked += size
        stream = self._streams.get(stream_id)
        if stream is not None and stream.remote_open:
            stream.unacked += size
            if stream.unacked >= self._local_initial_window // 2:
                out += self.send(WindowUpdate(stream_id, stream.unacked))
                stream.unacked = 0
        if self._session_unacked >= DEFAULT_WINDOW // 2:
            out += self.send(WindowUpdate(0, self._session_unacked))
            self._session_unacked = 0
        return out

    # ---------------------------------------------------------------- bookkeeping

    def _maybe_done(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.local_open and not stream.remote_open:
            del self._streams[stream_id]

    def _forget(self, stream_id: int, *, reset: bool) -> None:
        self._streams.pop(stream_id, None)
        if reset and stream_id not in self._reset:
            self._reset.append(stream_id)
