"""Port forwarding: a TCP connection to a port inside a pod's network namespace.

A socket belongs to the network namespace it was created in, whatever
thread later uses it. So a fresh thread enters the pod's namespace
(setns), creates the socket and ends; the event loop then connects it to
the pod's loopback and streams over it. Host-network pods (no namespace
path) connect from crio's own namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading

from crio.errors import NotFoundError, OCIRuntimeError

__all__ = ["connect_in_netns", "socket_in_netns"]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in_netns(netns_path: str | None, family: int) -> socket.socket:
    """A non-blocking TCP socket created inside ``netns_path`` (None: ours).

    Blocks for the time a thread needs to start: call it through ``asyncio.to_thread``.
    """
    if netns_path is None:
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        return sock
    try:
        ns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"network namespace {netns_path} does not exist") from None
    result: list[socket.socket | BaseException] = []

    def inside() -> None:  # this thread ends in the pod's namespace; nothing else runs there
        try:
            _setns(ns_fd, CLONE_NEWNET)
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            result.append(sock)
        except BaseException as exc:  # handed to the caller's thread below
            result.append(exc)

    try:
        thread = threading.Thread(target=inside, name="crio-netns")
        thread.start()
        thread.join()
    finally:
        os.close(ns_fd)
    if isinstance(result[0], BaseException):
        raise OCIRuntimeError(f"cannot enter network namespace {netns_path}: {result[0]}")
    return result[0]


async def connect_in_netns(
    netns_path: str | None, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``port`` on the pod's loopback (IPv4, then IPv6).

    :raises OSError: nothing listens there (ECONNREFUSED and friends).
    """
    errors = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            sock = await asyncio.to_thread(socket_in_netns, netns_path, family)
        except OSError as exc:  # e.g. no IPv6 in the pod
            errors.append(exc)
            continue
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        return await asyncio.open_connection(sock=sock, limit=256 * 1024)
    raise errors[0]
