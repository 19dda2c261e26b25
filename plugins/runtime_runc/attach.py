"""Attach to a container's own stdio through its conmon.

conmon listens on ``ATTACH_DIR/ID/attach``, a SOCK_SEQPACKET socket. Every
packet it sends starts with the pipe it came from (2 stdout, 3 stderr; a
tty's output counts as stdout); what a client sends is written to the
container's stdin as is (conmon ignores it when the container has no
stdin). Closing our write side ends our input; with ``stdin_once`` conmon
then closes the container's stdin. Resizes go to the ``ctl`` FIFO in the
bundle as ``1 HEIGHT WIDTH\\n``. Detaching closes the socket and leaves the
container running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

from crio.errors import OCIRuntimeError
from crio.oci.runtime import StreamIO

__all__ = ["attach_to_conmon", "resize_through_ctl"]

PIPE_STDOUT = 2
PIPE_STDERR = 3
#: conmon reads client packets into a 32 KiB buffer: never send more at once.
STDIN_PACKET = 8192
RECV_SIZE = 64 * 1024 + 1
WIN_RESIZE_EVENT = 1


async def _connect(attach_socket: Path) -> socket.socket:
    # A sockaddr path is limited to 108 bytes: go through /proc/self/fd of the directory.
    try:
        dir_fd = os.open(attach_socket.parent, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise OCIRuntimeError(f"no attach socket at {attach_socket}: {exc}") from exc
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(
            sock, f"/proc/self/fd/{dir_fd}/{attach_socket.name}"
        )
    except OSError as exc:
        sock.close()
        raise OCIRuntimeError(f"cannot connect to attach socket {attach_socket}: {exc}") from exc
    finally:
        os.close(dir_fd)
    return sock


def resize_through_ctl(ctl_fifo: Path, width: int, height: int) -> None:
    """Ask conmon to resize the container's terminal."""
    fd = os.open(ctl_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, f"{WIN_RESIZE_EVENT} {height} {width}\n".encode())
    finally:
        os.close(fd)


async def attach_to_conmon(
    attach_socket: Path, ctl_fifo: Path, io: StreamIO, *, stdin: bool = True
) -> None:
    """Relay between ``io`` and the container until it exits or we are cancelled.

    :param stdin: the container was created with stdin; else the client's is ignored.
    :raises OCIRuntimeError: conmon's attach socket is not there.
    """
    sock = await _connect(attach_socket)
    loop = asyncio.get_running_loop()
    helpers: list[asyncio.Task[None]] = []
    if stdin and io.stdin is not None:
        helpers.append(asyncio.create_task(_send_stdin(sock, io)))
    if io.resize is not None:
        helpers.append(asyncio.create_task(_resizes(ctl_fifo, io)))
    try:
        while packet := await loop.sock_recv(sock, RECV_SIZE):
            pipe, data = packet[0], packet[1:]
            if not data:
                continue
            if pipe == PIPE_STDERR:
                await io.write_stderr(data)
            elif pipe == PIPE_STDOUT:
                await io.write_stdout(data)
    finally:
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(BaseException):
                await task
        sock.close()


async def _send_stdin(sock: socket.socket, io: StreamIO) -> None:
    assert io.stdin is not None
    loop = asyncio.get_running_loop()
    async for chunk in io.stdin:
        for start in range(0, len(chunk), STDIN_PACKET):
            await loop.sock_sendall(sock, chunk[start : start + STDIN_PACKET])
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


async def _resizes(ctl_fifo: Path, io: StreamIO) -> None:
    assert io.resize is not None
    async for width, height in io.resize:
        with contextlib.suppress(OSError):
            resize_through_ctl(ctl_fifo, width, height)
