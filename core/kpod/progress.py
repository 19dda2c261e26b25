"""Copy progress for kpod: bars with bytes and speed on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from crio.image.copy import Progress

__all__ = ["ProgressPrinter"]

_WIDTH = 30
_REDRAW = 0.1  # seconds between redraws on a terminal


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n:.1f}GiB"


@dataclass
class _Blob:
    what: str
    total: int
    done: int = 0
    state: str = "copying"  # "copying", "done", "skipped"
    started: float = field(default_factory=time.monotonic)
    finished: float = 0.0

    def line(self) -> str:
        name = f"{self.what:<24}"
        if self.state == "skipped":
            return f"{name} already exists"
        elapsed = max((self.finished or time.monotonic()) - self.started, 1e-3)
        speed = f"{_size(self.done / elapsed)}/s"
        if self.total > 0:
            filled = min(_WIDTH, _WIDTH * self.done // self.total)
            bar = "=" * filled + (">" if filled < _WIDTH else "") + " " * (_WIDTH - filled - 1)
            amount = f"{_size(self.done)} / {_size(self.total)}"
        else:
            bar = " " * _WIDTH
            amount = _size(self.done)
        tail = f"{speed} done" if self.state == "done" else speed
        return f"{name} [{bar[:_WIDTH]}] {amount} | {tail}"


class ProgressPrinter:
    """Feed it :class:`~crio.image.copy.Progress` events; it writes to ``out``."""

    def __init__(self, out: TextIO, tty: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.tty = tty
        self.clock = clock
        self._blobs: dict[str, _Blob] = {}
        self._drawn = 0
        self._last = 0.0

    def message(self, text: str) -> None:
        """A line above the bars (``Copying config``, ``Writing manifest`` ...)."""
        if self.tty and self._drawn:
            self._redraw(force=True)
            self._drawn = 0  # bars stay as they are; the message goes below
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, event: Progress) -> None:
        what = ("config " if event.index < 0 else "blob ") + event.digest.partition(":")[2][:12]
        blob = self._blobs.get(event.digest)
        if blob is None:
            blob = self._blobs[event.digest] = _Blob(what, event.total)
            if not self.tty and event.kind != "skip":
                self.out.write(f"Copying {what}\n")
        if event.kind == "skip":
            blob.state = "skipped"
            if not self.tty:
                self.out.write(f"Copying {what} skipped: already exists\n")
        elif event.kind == "done":
            blob.state, blob.done, blob.finished = "done", event.done, time.monotonic()
            if not self.tty:
                self.out.write(f"Copying {what} done ({_size(event.done)})\n")
        elif event.kind == "advance":
            blob.done = event.done
        if self.tty:
            self._redraw(force=event.kind != "advance")
        self.out.flush()

    def _redraw(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last < _REDRAW:
            return
        self._last = now
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}A")  # back to the first bar
        lines = [blob.line() for blob in self._blobs.values()]
        for line in lines:
            self.out.write("\x1b[2K" + line + "\n")
        self._drawn = len(lines)
