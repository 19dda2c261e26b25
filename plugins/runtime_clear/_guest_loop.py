"""The guest agent's reactor and small helpers (standard library only).

A ``selectors`` loop with fd readers and writers, timers and a wake-up on
SIGCHLD: asyncio would cost about a second of imports under TCG, and a
PID 1 that owns ``waitpid(-1)`` does not mix with asyncio's child watchers.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable

__all__ = [
    "Failure",
    "Loop",
    "exit_code",
    "log",
    "read_keyed",
    "read_text",
    "set_blocking",
    "set_nonblocking",
]


def log(message: str) -> None:
    sys.stderr.write(f"crio-agent: {message}\n")
    sys.stderr.flush()


class Failure(Exception):
    """A request that cannot be done; becomes a Fault of ``kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def read_text(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def read_keyed(path: str) -> dict[str, str]:
    """A cgroup file of ``key value`` lines as a dict."""
    return dict(line.split(None, 1) for line in read_text(path).splitlines() if " " in line)


def set_nonblocking(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


class Loop:
    """A tiny reactor: fd readers, timers, and a SIGCHLD hook."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.readers: dict[int, Callable[[], None]] = {}
        self.writers: dict[int, Callable[[], None]] = {}
        self._seq = 0
        wake_r, wake_w = os.pipe()
        set_nonblocking(wake_r)
        set_nonblocking(wake_w)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.on_signal: Callable[[], None] = lambda: None
        self.add_reader(wake_r, lambda: self._woken(wake_r))

    def _woken(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 4096)
        self.on_signal()

    def _update(self, fd: int) -> None:
        reader, writer = self.readers.get(fd), self.writers.get(fd)
        events = (selectors.EVENT_READ if reader else 0) | (selectors.EVENT_WRITE if writer else 0)
        try:
            registered = self.selector.get_key(fd) is not None
        except KeyError:
            registered = False
        if not events:
            if registered:
                self.selector.unregister(fd)
        elif registered:
            self.selector.modify(fd, events)
        else:
            self.selector.register(fd, events)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self.readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        self.writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self.writers.pop(fd, None) is not None:
            self._update(fd)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self._seq, callback))

    def run_once(self) -> None:
        timeout = None
        if self.timers:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        for key, events in self.selector.select(timeout):
            if events & selectors.EVENT_READ and key.fd in self.readers:
                self.readers[key.fd]()
            if events & selectors.EVENT_WRITE and key.fd in self.writers:
                self.writers[key.fd]()
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, callback = heapq.heappop(self.timers)
            callback()


def set_blocking(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
