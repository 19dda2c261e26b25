"""The Kubernetes channel protocols over WebSocket, sans-I/O (wsproto does the framing).

Each message starts with its channel: a byte (``channel.k8s.io``,
``v4.channel.k8s.io``, ``v5.channel.k8s.io``) or an ASCII digit followed by
base64 (``base64.channel.k8s.io``, ``v4.base64.channel.k8s.io``). For exec
and attach the channels are 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize;
v5 adds the message ``[255, channel]``: the client closed that channel
(stdin EOF). A client that offers no subprotocol gets binary v1.

:class:`ChannelConnection` wraps :class:`wsproto.WSConnection` for one
server-side connection whose HTTP request h11 has already parsed:
``receive_data``/``next_event`` in, ``accept``/``send``/``close`` out.
"""

from __future__ import annotations

import base64
import binascii
import collections
from collections.abc import Sequence
from dataclasses import dataclass

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError as WsLocalError
from wsproto.utilities import RemoteProtocolError as WsRemoteError

from crio.streaming._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "EXEC_SUBPROTOCOLS",
    "PORT_FORWARD_SUBPROTOCOLS",
    "STREAM_CLOSE",
    "ChannelClose",
    "ChannelConnection",
    "ChannelData",
    "Closed",
    "Opening",
    "choose_subprotocol",
    "is_base64",
    "supports_stream_close",
]

V5 = "v5.channel.k8s.io"
#: In no particular order: the client's order decides.
EXEC_SUBPROTOCOLS = (
    V5,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
)
PORT_FORWARD_SUBPROTOCOLS = (
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "portforward.k8s.io",
)
STREAM_CLOSE = 255
#: Largest message accepted from a client (stdin chunks are far smaller).
MAX_MESSAGE = 16 * 1024 * 1024


def is_base64(subprotocol: str) -> bool:
    return ".base64." in f".{subprotocol}"


def supports_stream_close(subprotocol: str) -> bool:
    return subprotocol == V5


def choose_subprotocol(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """The first offered subprotocol we support; "" when none was offered; None: refuse."""
    if not offered:
        return ""
    for protocol in offered:
        if protocol in supported:
            return protocol
    return None


@dataclass(frozen=True, slots=True)
class Opening:
    """The client's upgrade request, to be answered with ``accept`` or ``reject``."""

    target: str
    subprotocols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelClose:
    """v5: the client will send nothing more on ``channel``."""

    channel: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The WebSocket closed (a close frame, or EOF as code 1006)."""

    code: int
    reason: str = ""


Event = Opening | ChannelData | ChannelClose | Closed


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class ChannelConnection:
    """One server-side channel WebSocket. No I/O; not thread-safe."""

    def __init__(self, request: h11.Request) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self._ws.initiate_upgrade_connection(request.headers, request.target)
        self._events: collections.deque[Event] = collections.deque()
        self._out = bytearray()
        self._partial = bytearray()
        self._partial_text = False
        self.subprotocol = ""
        self._closed = False

    def data_to_send(self) -> bytes:
        """Bytes produced while receiving (pongs, the close reply): write them out."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` is EOF."""
        try:
            self._ws.receive_data(data or None)
        except WsRemoteError as exc:
            raise RemoteProtocolError(f"websocket: {exc}") from None

    def next_event(self) -> Event | _NeedData:
        """The next channel event, or NEED_DATA.

        Raises:
            RemoteProtocolError: a bad frame, a message for a channel byte
            that does not decode, or a malformed v5 close.
        """
        try:
            while not self._events:
                if not self._pull():
                    return NEED_DATA
        except (WsRemoteError, LocalProtocolError) as exc:
            raise RemoteProtocolError(f"websocket: {exc}") from None
        return self._events.popleft()

    def _pull(self) -> bool:
        got = False
        for event in self._ws.events():
            got = True
            if isinstance(event, Request):
                self._events.append(Opening(event.target, tuple(event.subprotocols)))
            elif isinstance(event, BytesMessage | TextMessage):
                self._message(event)
            elif isinstance(event, Ping):
                self._out += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if not self._closed and event.code != 1006:
                    self._closed = True
                    self._out += self._ws.send(event.response())
                self._closed = True
                self._events.append(Closed(event.code, event.reason or ""))
        return got

    def _message(self, event: BytesMessage | TextMessage) -> None:
        chunk = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
        self._partial += chunk
        self._partial_text = isinstance(event, TextMessage)
        if len(self._partial) > MAX_MESSAGE:
            raise LocalProtocolError(f"message longer than {MAX_MESSAGE} bytes")
        if not event.message_finished:
            return
        message, self._partial = bytes(self._partial), bytearray()
        if message:
            self._events.append(self._decode(message))

    def _decode(self, message: bytes) -> ChannelData | ChannelClose:
        if supports_stream_close(self.subprotocol) and message[0] == STREAM_CLOSE:
            if len(message) != 2:
                raise LocalProtocolError("a stream close message is [255, channel]")
            return ChannelClose(message[1])
        if not is_base64(self.subprotocol):
            return ChannelData(message[0], message[1:])
        channel = message[0] - ord("0")
        if not 0 <= channel <= 9:
            raise LocalProtocolError(f"base64 message starts with {message[:1]!r}, not a digit")
        try:
            return ChannelData(channel, base64.b64decode(message[1:], validate=True))
        except binascii.Error as exc:
            raise LocalProtocolError(f"channel {channel}: bad base64: {exc}") from None

    # ---------------------------------------------------------------- sending

    def accept(self, subprotocol: str) -> bytes:
        """Answer the Opening with 101 and ``subprotocol`` ("" for none)."""
        self.subprotocol = subprotocol
        return self._send(AcceptConnection(subprotocol=subprotocol or None))

    def reject(self, status: int, message: str) -> bytes:
        body = (message + "\n").encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        headers.append((b"content-length", str(len(body)).encode()))
        out = self._send(RejectConnection(status_code=status, headers=headers, has_body=True))
        return out + self._send(RejectData(data=body))

    def send(self, channel: int, data: bytes) -> bytes:
        """One message on ``channel``, encoded for the negotiated subprotocol."""
        if not 0 <= channel < STREAM_CLOSE:
            raise LocalProtocolError(f"channel {channel} is outside 0..254")
        if is_base64(self.subprotocol):
            text = chr(ord("0") + channel) + base64.b64encode(data).decode()
            return self._send(TextMessage(data=text))
        return self._send(BytesMessage(data=bytes([channel]) + data))

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        """Start the closing handshake (nothing if it already happened)."""
        if self._closed:
            return b""
        self._closed = True
        return self._send(CloseConnection(code=code, reason=reason or None))

    def _send(self, event: object) -> bytes:
        try:
            return self._ws.send(event)  # type: ignore[arg-type]
        except WsLocalError as exc:
            raise LocalProtocolError(f"websocket: {exc}") from None
