"""The guest's network set-up over rtnetlink (standard library only).

What ``ip link set ... up``, ``ip addr add`` and ``ip route add`` would do,
as netlink messages sent from the agent itself: under TCG each ``ip`` run
costs a fork, an exec and a dynamic link over virtio-fs, about a tenth of a
second each on an idle host (seconds on a loaded one), for a few bytes of
netlink. The message builders and the reply parser are pure (bytes out,
bytes in); :func:`apply` is the only part that touches a socket.
"""

from __future__ import annotations

import ipaddress
import os
import struct

# No typing at run time: the guest imports this module while it boots.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Change", "acks", "add_address", "add_route", "apply", "interface_index", "set_link"]

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFF_UP = 0x1
IFLA_MTU = 4
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
AF_UNSPEC = 0
AF_INET = 2
AF_INET6 = 10


class Change:
    """One netlink request and what to call it in an error message."""

    def __init__(self, what: str, kind: int, flags: int, body: bytes) -> None:
        self.what = what
        self.kind = kind
        self.flags = flags
        self.body = body

    def encode(self, seq: int) -> bytes:
        flags = NLM_F_REQUEST | NLM_F_ACK | self.flags
        return struct.pack("=IHHII", 16 + len(self.body), self.kind, flags, seq, 0) + self.body


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def set_link(index: int, name: str, up: bool = True, mtu: int = 0) -> Change:
    """``ip link set dev NAME [mtu N] up``."""
    flags = IFF_UP if up else 0
    body = struct.pack("=BxHiII", AF_UNSPEC, 0, index, flags, IFF_UP)
    what = f"ip link set dev {name}" + (f" mtu {mtu}" if mtu else "") + (" up" if up else "")
    if mtu:
        body += _attr(IFLA_MTU, struct.pack("=I", mtu))
    return Change(what, RTM_NEWLINK, 0, body)


def add_address(index: int, name: str, address: str) -> Change:
    """``ip addr add ADDRESS/PREFIX dev NAME``."""
    interface = ipaddress.ip_interface(address)
    family = AF_INET if interface.version == 4 else AF_INET6
    packed = interface.ip.packed
    body = struct.pack("=BBBBI", family, interface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    return Change(f"ip addr add {address} dev {name}", RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)


def add_route(destination: str, gateway: str = "") -> Change:
    """``ip route add DESTINATION [via GATEWAY]`` (``default`` for any address)."""
    via = ipaddress.ip_address(gateway) if gateway else None
    if destination == "default":
        version = via.version if via is not None else 4
        network = ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
    else:
        network = ipaddress.ip_network(destination, strict=False)
    family = AF_INET if network.version == 4 else AF_INET6
    scope = RT_SCOPE_UNIVERSE if via is not None else RT_SCOPE_LINK
    body = struct.pack(
        "=BBBBBBBBI", family, network.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope,
        RTN_UNICAST, 0,
    )  # fmt: skip
    if network.prefixlen:
        body += _attr(RTA_DST, network.network_address.packed)
    if via is not None:
        body += _attr(RTA_GATEWAY, via.packed)
    what = f"ip route add {destination}" + (f" via {gateway}" if gateway else "")
    return Change(what, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)


def acks(data: bytes) -> list[tuple[int, int]]:
    """The ``(seq, errno)`` of each acknowledgement in ``data`` (errno 0: done)."""
    found = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR and length >= 20:
            (error,) = struct.unpack_from("=i", data, offset + 16)
            found.append((seq, -error))
        offset += (length + 3) & ~3
    return found


def apply(changes: Sequence[Change]) -> None:
    """Send ``changes`` in order, each acknowledged before the next.

    :raises OSError: the first one the kernel refused; its ``strerror`` names
        the change as ``ip`` would, and the kernel's reason.
    """
    import socket

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        for seq, change in enumerate(changes, start=1):
            sock.send(change.encode(seq))
            while True:
                got = dict(acks(sock.recv(65536)))
                if seq in got:
                    break
            if got[seq]:
                code = got[seq]
                raise OSError(code, f"{change.what}: {os.strerror(code)}")
    finally:
        sock.close()


def interface_index(name: str) -> int:
    with open(f"/sys/class/net/{name}/ifindex") as handle:
        return int(handle.read())
