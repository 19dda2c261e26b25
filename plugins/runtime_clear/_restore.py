"""The supervisor's part of restoring a pod VM from a template (standard library only).

1. :func:`new_memory`, :func:`fill_memory`: the template's RAM file is
   sparse; its data extents are copied into a memfd of the pod's own
   (vhost-user maps guest RAM shared, so the pod cannot share the template's
   pages copy-on-write), which qemu maps as ``/proc/self/fd/N``.
2. :func:`incoming`: qemu started with ``-incoming defer`` is told to skip
   shared RAM (``x-ignore-shared``, as when it was saved) and to load the
   device state; then the virtio-fs devices, which qemu 7.2 refuses to
   migrate, are hot-plugged into the template's PCIe root ports, and the
   guest runs on.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from typing import Any

from _qmp import QMP

__all__ = ["fill_memory", "incoming", "new_memory"]

SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)
CHUNK = 64 << 20


def _extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The data extents of a sparse file, as (offset, length)."""
    found = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but holes after offset
                break
            raise
        end = min(os.lseek(fd, start, SEEK_HOLE), size)
        found.append((start, end - start))
        offset = end
    return found


def new_memory(size: int) -> int:
    """An inheritable memfd of ``size`` bytes, all holes, for qemu to map."""
    memfd = os.memfd_create("crio-vm-ram", 0)
    try:
        os.ftruncate(memfd, size)
    except BaseException:
        os.close(memfd)
        raise
    return memfd


def fill_memory(memfd: int, source: str, size: int) -> int:
    """Copy the data extents of ``source`` into ``memfd``; the bytes copied.

    qemu may already map the memfd: it touches no guest RAM while it waits for
    an incoming migration, and the copy is done before the migration starts.
    """
    copied = 0
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for start, length in _extents(src, size):
            os.lseek(memfd, start, os.SEEK_SET)
            done = 0
            while done < length:
                sent = os.sendfile(memfd, src, start + done, min(CHUNK, length - done))
                if sent == 0:
                    raise OSError(errno.EIO, f"{source} ended at {start + done}")
                done += sent
            copied += length
    finally:
        os.close(src)
    return copied


def incoming(
    qmp_path: str,
    state: str,
    hotplug: list[tuple[str, dict[str, Any]]],
    timeout: float,
    mark: Callable[[str], None] = lambda step: None,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Load the saved devices into the waiting qemu, plug the shares, run the guest.

    :param hotplug: QMP commands (``chardev-add``, ``device_add``) run once the
        state is in.
    :param mark: told of each step done (``monitor``, ``loaded``, ``running``).
    :param alive: False once qemu is gone or the supervisor was told to stop.
    :raises QMPError: qemu refused a step; the message says which.
    """
    qmp = QMP(qmp_path, timeout=timeout, alive=alive)
    try:
        mark("monitor")
        qmp.execute(
            "migrate-set-capabilities",
            capabilities=[{"capability": "x-ignore-shared", "state": True}],
        )
        qmp.execute("migrate-incoming", uri="exec:cat " + _quote(state))
        qmp.wait_migration(timeout)
        mark("loaded")
        for name, args in hotplug:
            qmp.execute(name, **args)
        qmp.execute("cont")
        mark("running")
    finally:
        with contextlib.suppress(OSError):
            qmp.close()


def _quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"
