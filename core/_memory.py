"""glibc malloc settings for the daemon: what a pull or a burst of pods frees goes back.

glibc raises its mmap threshold (up to 32 MiB) each time a large mmapped block
is freed; afterwards the megabyte-sized buffers of a layer download come from
the heap and stay resident once freed. The daemon fixes the threshold, caps
the number of arenas (its pool threads would otherwise get one each, up to
eight per core), and trims the heap after work that allocated a lot. Each
setting is skipped where the C library lacks it (musl has no ``mallopt``).
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["release_free_memory", "tune_malloc"]

log = logging.getLogger("crio")

#: mallopt parameters (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: Blocks this large or larger are mmapped, and unmapped when freed.
MMAP_THRESHOLD = 256 * 1024
#: Two arenas: the event loop's and one shared by the pool threads (they hold the GIL anyway).
ARENA_MAX = 2

_libc = ctypes.CDLL(None)


def tune_malloc() -> None:
    """Fix the mmap threshold and cap the arenas; call once, early in the daemon."""
    mallopt = getattr(_libc, "mallopt", None)
    if mallopt is None:
        return
    for parameter, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_ARENA_MAX, ARENA_MAX)):
        if mallopt(parameter, value) != 1:
            log.debug("mallopt(%d, %d) refused", parameter, value)


def release_free_memory() -> None:
    """Give the heap's free pages back to the kernel (``malloc_trim``; a few ms at most)."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
