"""sd_notify(3) for ``Type=notify`` units: one datagram per state change to ``$NOTIFY_SOCKET``.

The protocol is a newline-separated ``KEY=VALUE`` list in one ``SOCK_DGRAM``
datagram to the unix socket systemd names in ``$NOTIFY_SOCKET`` (a path, or
an abstract name written with a leading ``@``). :func:`take_socket` removes
the variable from the environment once, at start-up, so that crio's
children (runc would proxy it into containers) never see it.
"""

from __future__ import annotations

import os
import socket

__all__ = ["Notifier", "encode", "take_socket"]

ENV = "NOTIFY_SOCKET"


def encode(**fields: str | int) -> bytes:
    """``READY=1\\nSTATUS=...`` from ``READY=1, STATUS="..."`` (newlines in values refused)."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if "\n" in text:
            raise ValueError(f"sd_notify field {key} must be one line")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode()


def _address(value: str) -> str:
    return "\0" + value[1:] if value.startswith("@") else value


def take_socket(environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """Remove ``$NOTIFY_SOCKET`` from the environment and return it ("" when unset)."""
    env = os.environ if environ is None else environ
    return env.pop(ENV, "")


class Notifier:
    """Sends state changes to the service manager; does nothing without a socket."""

    def __init__(self, address: str) -> None:
        self.address = address

    def send(self, **fields: str | int) -> bool:
        """Send one datagram; False when there is no manager to tell (or it is gone)."""
        if not self.address or not self.address.strip("@"):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.connect(_address(self.address))
                sock.sendall(encode(**fields))
            except OSError:
                return False
        return True
