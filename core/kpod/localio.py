"""kpod's own terminal as the client side of an exec (a :class:`crio.oci.runtime.StreamIO`)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator

__all__ = ["LocalIO", "raw_terminal"]


async def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await asyncio.sleep(0.001)


class LocalIO:
    """stdin (with ``-i``), stdout and stderr of this process; terminal size with ``-t``."""

    def __init__(self, *, interactive: bool, tty_mode: bool) -> None:
        self.tty = tty_mode
        self.stdin: AsyncIterator[bytes] | None = self._stdin() if interactive else None
        self.resize: AsyncIterator[tuple[int, int]] | None = self._sizes() if tty_mode else None

    async def write_stdout(self, data: bytes) -> None:
        await _write(1, data)

    async def write_stderr(self, data: bytes) -> None:
        await _write(2, data)

    async def _stdin(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(0, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(0)
            queue.put_nowait(data)

        try:
            loop.add_reader(0, readable)
        except (PermissionError, ValueError):  # a regular file: read it whole
            yield await asyncio.to_thread(sys.stdin.buffer.read)
            return
        try:
            while data := await queue.get():
                yield data
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(0)

    async def _sizes(self) -> AsyncIterator[tuple[int, int]]:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        changed.set()
        loop.add_signal_handler(signal.SIGWINCH, changed.set)
        try:
            while True:
                await changed.wait()
                changed.clear()
                yield _size()
        finally:
            loop.remove_signal_handler(signal.SIGWINCH)


def _size() -> tuple[int, int]:
    try:
        packed = fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8)
        rows, cols = struct.unpack("HHHH", packed)[:2]
        return cols or 80, rows or 24
    except OSError:
        return 80, 24


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """stdin in raw mode while an interactive terminal session runs; restored after."""
    if not enabled or not os.isatty(0):
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
