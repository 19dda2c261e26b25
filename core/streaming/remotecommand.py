"""The Kubernetes remote-command and port-forward conventions, sans-I/O.

What rides on the streams once a connection is upgraded (after
k8s.io/apimachinery ``util/remotecommand`` and the kubelet's
``cri/streaming``): the protocol names a client may offer, which streams an
exec or attach session waits for, the error stream's Status, the resize
stream's JSON, and how port-forward streams pair up by ``requestID``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass

from crio.streaming._errors import LocalProtocolError

__all__ = [
    "PORT_FORWARD_PROTOCOL",
    "SPDY_EXEC_PROTOCOLS",
    "SPDY_PORT_FORWARD_PROTOCOLS",
    "STREAM_CREATION_TIMEOUT",
    "V1",
    "V2",
    "V3",
    "V4",
    "ForwardPair",
    "PortForwardPairing",
    "ResizeDecoder",
    "StreamType",
    "exit_code_status",
    "expected_streams",
    "failure_status",
    "success_status",
]

V1 = "channel.k8s.io"
V2 = "v2.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V4 = "v4.channel.k8s.io"
#: Over SPDY, in our order of preference (the client's order decides).
SPDY_EXEC_PROTOCOLS = (V4, V3, V2, V1)
PORT_FORWARD_PROTOCOL = "portforward.k8s.io"
SPDY_PORT_FORWARD_PROTOCOLS = (PORT_FORWARD_PROTOCOL,)
#: How long a client has to open all the streams a session needs (the kubelet's 30 s).
STREAM_CREATION_TIMEOUT = 30.0


class StreamType(enum.Enum):
    """The ``streamType`` header of a SPDY stream."""

    ERROR = "error"
    STDIN = "stdin"
    STDOUT = "stdout"
    STDERR = "stderr"
    RESIZE = "resize"
    DATA = "data"  # port forward


def supports_resize(protocol: str) -> bool:
    return protocol in (V3, V4) or protocol.startswith(("v4.", "v5."))


def expected_streams(
    protocol: str, *, stdin: bool, stdout: bool, stderr: bool, tty: bool
) -> frozenset[StreamType]:
    """The streams a SPDY exec/attach session waits for before it starts."""
    wanted = {StreamType.ERROR}
    for kind, on in (
        (StreamType.STDIN, stdin),
        (StreamType.STDOUT, stdout),
        (StreamType.STDERR, stderr and not tty),
        (StreamType.RESIZE, tty and supports_resize(protocol)),
    ):
        if on:
            wanted.add(kind)
    return frozenset(wanted)


def _json_status(protocol: str) -> bool:
    # v4 and v5 carry a metav1.Status as JSON; older ones a bare error message.
    return protocol.startswith(("v4.", "v5."))


def success_status(protocol: str) -> bytes:
    """What the error stream carries when the command succeeded."""
    return json.dumps({"status": "Success"}).encode() if _json_status(protocol) else b""


def exit_code_status(protocol: str, exit_code: int) -> bytes:
    """The NonZeroExitCode Status (v4/v5) or message (older) for ``exit_code``."""
    message = f"command terminated with non-zero exit code: exit status {exit_code}"
    if not _json_status(protocol):
        return message.encode()
    status = {
        "status": "Failure",
        "message": message,
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }
    return json.dumps(status).encode()


def failure_status(protocol: str, message: str) -> bytes:
    """An InternalError Status (v4/v5) or message (older): the session could not run."""
    text = f"Internal error occurred: {message}"
    if not _json_status(protocol):
        return text.encode()
    status = {
        "status": "Failure",
        "message": text,
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }
    return json.dumps(status).encode()


class ResizeDecoder:
    """Split the resize stream into ``(width, height)``: JSON objects, back to back.

    client-go writes ``{"Width":80,"Height":24}`` per event with Go's JSON
    encoder (a newline after each); any whitespace between objects is fine.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._buffer = ""
        self._pending = b""
        self._limit = limit
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> Iterator[tuple[int, int]]:
        """Yield every complete size in ``data``.

        :raises LocalProtocolError: not JSON, not a size object, or an object
            longer than the limit.
        """
        raw = self._pending + data
        try:
            text = raw.decode()
            self._pending = b""
        except UnicodeDecodeError as exc:
            if exc.start < len(raw) - 3:
                raise LocalProtocolError(f"resize stream is not UTF-8: {exc}") from None
            text, self._pending = raw[: exc.start].decode(), raw[exc.start :]
        self._buffer += text
        while True:
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return
            try:
                obj, end = self._decoder.raw_decode(self._buffer)
            except json.JSONDecodeError:
                if len(self._buffer) > self._limit:
                    raise LocalProtocolError("resize event is not JSON") from None
                return  # wait for the rest of the object
            self._buffer = self._buffer[end:]
            yield _size(obj)


def _size(obj: object) -> tuple[int, int]:
    if not isinstance(obj, dict):
        raise LocalProtocolError(f"resize event {obj!r} is not an object")
    width, height = obj.get("Width", 0), obj.get("Height", 0)
    if not all(isinstance(v, int) and 0 <= v <= 0xFFFF for v in (width, height)):
        raise LocalProtocolError(f"resize event {obj!r} needs Width and Height in 0..65535")
    return width, height


@dataclass(frozen=True, slots=True)
class ForwardPair:
    """The data and error streams of one forwarded connection."""

    request_id: str
    port: int
    data_stream: int
    error_stream: int


def parse_port(value: bytes | str | None) -> int:
    """A ``port`` header or query value: a decimal TCP port 1..65535."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not text or not text.isdigit() or not 0 < int(text) <= 0xFFFF:
        raise LocalProtocolError(f"port {text!r} is not a TCP port number (1-65535)")
    return int(text)


class PortForwardPairing:
    """Pair SPDY port-forward streams by ``requestID``.

    Older clients send no ``requestID``; the kubelet then derives it from
    the stream ids (the data stream follows its error stream by 2), and so
    do we.
    """

    def __init__(self) -> None:
        self._half: dict[str, tuple[StreamType, int, int]] = {}

    def add(
        self,
        stream_id: int,
        stream_type: bytes | None,
        port: bytes | None,
        request_id: bytes | None,
    ) -> ForwardPair | None:
        """Record one stream; return the pair once both halves are in.

        :raises LocalProtocolError: unknown streamType, bad port, a second
            stream of the same type for a request, or halves naming different ports.
        """
        try:
            kind = StreamType((stream_type or b"").decode("latin-1"))
        except ValueError:
            raise LocalProtocolError(
                f"unexpected port-forward stream type {stream_type!r}"
            ) from None
        if kind not in (StreamType.DATA, StreamType.ERROR):
            raise LocalProtocolError(f"unexpected port-forward stream type {kind.value!r}")
        number = parse_port(port)
        if request_id:
            key = request_id.decode("latin-1")
        else:
            key = str(stream_id if kind is StreamType.ERROR else stream_id - 2)
        other = self._half.pop(key, None)
        if other is None:
            self._half[key] = (kind, stream_id, number)
            return None
        other_kind, other_id, other_port = other
        if other_kind is kind:
            raise LocalProtocolError(f"request {key} has two {kind.value} streams")
        if other_port != number:
            raise LocalProtocolError(f"request {key} names ports {other_port} and {number}")
        data, error = (stream_id, other_id) if kind is StreamType.DATA else (other_id, stream_id)
        return ForwardPair(key, number, data, error)

    def pending(self) -> int:
        return len(self._half)
