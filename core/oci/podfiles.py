"""The files a pod's containers share: /etc/hostname, /etc/hosts and /etc/resolv.conf."""

from __future__ import annotations

import re
from collections.abc import Sequence

from crio.errors import InvalidRequestError

__all__ = ["render_hostname", "render_hosts", "render_resolv_conf", "validate_hostname"]

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", re.IGNORECASE)


def validate_hostname(hostname: str, field_name: str = "hostname") -> None:
    """:raises InvalidRequestError: unless ``hostname`` is an RFC 1123 name of <= 64 bytes."""
    if len(hostname) > 64:
        raise InvalidRequestError(f"{field_name}: {hostname!r} is longer than 64 characters")
    if hostname and not all(_LABEL.match(label) for label in hostname.split(".")):
        raise InvalidRequestError(f"{field_name}: {hostname!r} is not a valid host name")


def render_hostname(hostname: str) -> bytes:
    return f"{hostname}\n".encode()


def render_hosts(hostname: str, ips: Sequence[str] = ()) -> bytes:
    """An /etc/hosts naming localhost and the pod's own name (on its IPs, if known)."""
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if hostname:
        for ip in ips or ("127.0.1.1",):
            lines.append(f"{ip}\t{hostname}")
    return ("\n".join(lines) + "\n").encode()


def render_resolv_conf(
    servers: Sequence[str], searches: Sequence[str], options: Sequence[str]
) -> bytes:
    """resolv.conf from a CRI DNSConfig (nameserver, search and options lines)."""
    for i, server in enumerate(servers):
        if not server or any(c.isspace() for c in server):
            raise InvalidRequestError(f"dns_config.servers[{i}]: {server!r} is not an address")
    for field_name, values in (("searches", searches), ("options", options)):
        for i, value in enumerate(values):
            if not value or any(c.isspace() for c in value):
                raise InvalidRequestError(
                    f"dns_config.{field_name}[{i}]: {value!r} is empty or contains spaces"
                )
    lines = [f"nameserver {server}" for server in servers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(options))
    return ("\n".join(lines) + "\n").encode()
