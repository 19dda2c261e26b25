"""The HTTP side of a streaming request, sans-I/O: route, upgrade kind, negotiation.

A client asks ``GET|POST /{exec,attach,portforward}/TOKEN`` with either
``Upgrade: SPDY/3.1`` and one ``X-Stream-Protocol-Version`` per protocol it
speaks (httpstream.Handshake: the first one the server supports wins), or
``Upgrade: websocket`` with ``Sec-WebSocket-Protocol`` (negotiated by
:mod:`crio.streaming.websocket`). These functions look at an
:class:`h11.Request` and say what to answer; they never touch a socket.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import h11

__all__ = [
    "KINDS",
    "Refusal",
    "Route",
    "negotiate",
    "offered_protocols",
    "parse_route",
    "refusal_events",
    "spdy_switch",
    "upgrade_kind",
]

KINDS = ("exec", "attach", "portforward")
HEADER_PROTOCOL = b"x-stream-protocol-version"
HEADER_ACCEPTED = b"x-accepted-stream-protocol-versions"


@dataclass(frozen=True, slots=True)
class Route:
    """What the request path names."""

    kind: str
    token: str
    query: tuple[tuple[str, str], ...] = ()

    def query_values(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP error answer instead of an upgrade."""

    status: int
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def parse_route(request: h11.Request) -> Route | Refusal:
    """``/exec/TOKEN`` and friends; anything else is 404, a wrong method 405."""
    path, _, query = request.target.decode("latin-1").partition("?")
    parts = path.split("/")
    if len(parts) != 3 or parts[0] or parts[1] not in KINDS or not parts[2]:
        return Refusal(404, f"no streaming endpoint at {path}")
    if request.method not in (b"GET", b"POST"):
        return Refusal(405, f"{request.method.decode()} is not allowed; use GET or POST")
    pairs = tuple(urllib.parse.parse_qsl(query, keep_blank_values=True))
    return Route(parts[1], urllib.parse.unquote(parts[2]), pairs)


def _tokens(request: h11.Request, name: bytes) -> list[bytes]:
    out: list[bytes] = []
    for key, value in request.headers:
        if key == name:
            out += [item.strip().lower() for item in value.split(b",") if item.strip()]
    return out


def upgrade_kind(request: h11.Request) -> str | Refusal:
    """``"spdy"`` or ``"websocket"``; 400 when the request asks for no upgrade we speak."""
    if b"upgrade" not in _tokens(request, b"connection"):
        return Refusal(400, "unable to upgrade: missing Connection: Upgrade in request")
    upgrades = _tokens(request, b"upgrade")
    if b"websocket" in upgrades:
        return "websocket"
    if b"spdy/3.1" in upgrades:
        return "spdy"
    return Refusal(400, "unable to upgrade: Upgrade must be SPDY/3.1 or websocket")


def offered_protocols(request: h11.Request) -> list[str]:
    """The ``X-Stream-Protocol-Version`` offers, in the client's order."""
    offers: list[str] = []
    for key, value in request.headers:
        if key == HEADER_PROTOCOL:
            offers += [p.strip().decode("latin-1") for p in value.split(b",") if p.strip()]
    return offers


def negotiate(request: h11.Request, supported: Sequence[str], fallback: str) -> str | Refusal:
    """Pick the first offered protocol the server supports.

    A client that offers none predates negotiation and gets ``fallback``
    (the kubelet does the same); offers with no match are refused with 403
    and ``X-Accepted-Stream-Protocol-Versions``.
    """
    offers = offered_protocols(request)
    if not offers:
        return fallback
    for offer in offers:
        if offer in supported:
            return offer
    accepted = tuple((HEADER_ACCEPTED, p.encode()) for p in supported)
    return Refusal(
        403,
        f"unable to upgrade: unable to negotiate protocol: client supports {offers}, "
        f"server accepts {list(supported)}",
        accepted,
    )


def spdy_switch(protocol: str) -> h11.InformationalResponse:
    """The 101 answer that hands the connection over to SPDY."""
    headers = [(b"connection", b"Upgrade"), (b"upgrade", b"SPDY/3.1")]
    if protocol:
        headers.append((HEADER_PROTOCOL, protocol.encode()))
    return h11.InformationalResponse(status_code=101, headers=headers)


def refusal_events(refusal: Refusal) -> list[h11.Event]:
    """The response events for an error answer; the connection closes after it."""
    body = (refusal.message + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *refusal.headers,
    ]
    return [
        h11.Response(status_code=refusal.status, headers=headers),
        h11.Data(data=body),
        h11.EndOfMessage(),
    ]
