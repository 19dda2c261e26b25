"""Watch a directory with inotify on the event loop: conmon's exit files appear there."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "IN_CLOSE_WRITE",
    "IN_MOVED_TO",
    "IN_Q_OVERFLOW",
    "DirectoryWatcher",
    "InotifyEvent",
    "parse_events",
]

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    wd: int
    mask: int
    name: str


def parse_events(data: bytes) -> list[InotifyEvent]:
    """Decode a read(2) of an inotify fd: a sequence of ``struct inotify_event``."""
    events = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        raw = data[offset : offset + length]
        offset += length
        events.append(InotifyEvent(wd, mask, raw.split(b"\0", 1)[0].decode("utf-8", "replace")))
    return events


class DirectoryWatcher:
    """Calls ``on_file(name)`` when a file is written or moved into ``directory``.

    ``on_overflow()`` is called when the kernel dropped events; the owner
    then rescans the directory.
    """

    def __init__(
        self,
        directory: str,
        on_file: Callable[[str], None],
        on_overflow: Callable[[], None],
    ) -> None:
        self.directory = directory
        self._on_file = on_file
        self._on_overflow = on_overflow
        self._fd = -1

    def start(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        mask = IN_CLOSE_WRITE | IN_MOVED_TO
        if _libc.inotify_add_watch(fd, self.directory.encode(), mask) < 0:
            code = ctypes.get_errno()
            os.close(fd)
            raise OSError(code, f"inotify_add_watch {self.directory}: {os.strerror(code)}")
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        for event in parse_events(data):
            if event.mask & IN_Q_OVERFLOW:
                self._on_overflow()
            elif event.name:
                self._on_file(event.name)

    def close(self) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
