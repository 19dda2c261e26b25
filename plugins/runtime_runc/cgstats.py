"""The kubelet's figures from cgroupfs: few files, paths resolved once, a whole node per pass.

ListContainerStats and ListPodSandboxStats sample every container and pod of
a node every few seconds. For each cgroup this reads only what CRI reports:

- v1: ``memory.stat`` (rss, inactive file, page faults, swap), ``memory.usage_in_bytes``,
  ``memory.limit_in_bytes``, ``cpuacct.usage``, and for pods ``pids.current``;
- v2: ``memory.stat``, ``memory.current``, ``memory.max``, ``memory.swap.current``,
  ``cpu.stat``, and for pods ``pids.current``.

A :class:`CgroupReader` keeps each file open once read and reads it again
with one ``pread(2)`` (cgroupfs regenerates a file read from offset 0), and
only the keys used are parsed. Block I/O and OOM kills, which CRI does not carry, are left at 0
(:meth:`Hierarchies.usage <crio_plugins.runtime_runc.cgroups.Hierarchies.usage>`
reads everything, for kpod). A missing file reads as 0, like a gone cgroup.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from crio_plugins.runtime_runc.cgroups import CgroupUsage, Hierarchies
from crio_plugins.runtime_runc.systemd import cgroup_path as systemd_cgroup_path

__all__ = [
    "CgroupReader",
    "Sampler",
    "StatsFiles",
    "read_net_dev",
    "read_usage",
    "stats_files",
]

T = TypeVar("T")

#: memory.limit_in_bytes reads as this (page-rounded LONG_MAX) or more when unlimited.
_V1_UNLIMITED = 1 << 62
#: The memory.stat keys used, v1 (hierarchical totals) and v2.
_V1_KEYS = (b"total_rss", b"total_inactive_file", b"total_pgfault", b"total_pgmajfault",
            b"total_swap")  # fmt: skip
_V2_KEYS = (b"anon", b"inactive_file", b"pgfault", b"pgmajfault", b"")


@dataclass(frozen=True, slots=True)
class StatsFiles:
    """The files of one cgroup that CRI stats read ("" where there is none)."""

    v2: bool
    memory_stat: str
    memory_usage: str
    memory_limit: str
    cpu: str
    swap: str = ""
    pids: str = ""


def stats_files(hierarchies: Hierarchies, cgroup_path: str, processes: bool) -> StatsFiles:
    """Resolve once the files :func:`read_usage` reads for ``cgroup_path``.

    :param processes: also count processes (``pids.current``; pods only).
    """
    cgroup_path = systemd_cgroup_path(cgroup_path)
    if hierarchies.unified_only:
        base = f"{hierarchies.v2}{cgroup_path}"
        return StatsFiles(
            v2=True,
            memory_stat=f"{base}/memory.stat",
            memory_usage=f"{base}/memory.current",
            memory_limit=f"{base}/memory.max",
            cpu=f"{base}/cpu.stat",
            swap=f"{base}/memory.swap.current",
            pids=f"{base}/pids.current" if processes else "",
        )
    memory = hierarchies.v1.get("memory", "")
    cpuacct = hierarchies.v1.get("cpuacct", "")
    pids = hierarchies.v1.get("pids", "")

    def under(root: str, name: str) -> str:
        return f"{root}{cgroup_path}/{name}" if root else ""

    return StatsFiles(
        v2=False,
        memory_stat=under(memory, "memory.stat"),
        memory_usage=under(memory, "memory.usage_in_bytes"),
        memory_limit=under(memory, "memory.limit_in_bytes"),
        cpu=under(cpuacct, "cpuacct.usage"),
        pids=under(pids, "pids.current") if processes else "",
    )


class CgroupReader:
    """Cgroup files kept open between samples (at most ``budget`` descriptors).

    Opening a cgroupfs file walks its path; once open, ``pread(fd, 0)`` makes the
    kernel generate it afresh. An open file does not keep its cgroup from being
    removed (reads then fail, and read as empty). :meth:`forget` closes the files
    of a container or pod that is gone. One batch reads at a time (:attr:`lock`).
    """

    def __init__(self, budget: int) -> None:
        self.lock = threading.Lock()
        self._budget = budget
        self._fds: dict[str, int] = {}

    def read(self, path: str) -> bytes:
        if not path:
            return b""
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return b""
            if len(self._fds) >= self._budget:
                try:
                    return os.read(fd, 1 << 16)
                except OSError:
                    return b""
                finally:
                    os.close(fd)
            self._fds[path] = fd
        try:
            return os.pread(fd, 1 << 16, 0)
        except OSError:  # the cgroup is gone
            del self._fds[path]
            os.close(fd)
            return b""

    def forget(self, files: StatsFiles) -> None:
        """Close the files of one cgroup (call with :attr:`lock` held or from the loop
        while no batch runs)."""
        for path in (files.memory_stat, files.memory_usage, files.memory_limit, files.cpu,
                     files.swap, files.pids):  # fmt: skip
            fd = self._fds.pop(path, None)
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        with self.lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __len__(self) -> int:
        return len(self._fds)


def _int(data: bytes) -> int:
    try:
        return int(data)
    except ValueError:  # empty, or "max"
        return 0


def _keyed(data: bytes, keys: tuple[bytes, ...]) -> list[int]:
    """The values of ``keys`` (in that order) in a ``key value`` file; 0 when absent."""
    wanted = dict.fromkeys(keys, 0)
    for line in data.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key in wanted:
            wanted[key] = _int(value)
    return [wanted[key] for key in keys]


def read_usage(files: StatsFiles, reader: CgroupReader) -> CgroupUsage:
    """Sample one cgroup (blocking; cgroupfs reads never wait on a disk)."""
    read = reader.read
    usage = _int(read(files.memory_usage))
    limit = _int(read(files.memory_limit))
    if files.v2:
        rss, inactive, faults, major, _ = _keyed(read(files.memory_stat), _V2_KEYS)
        (usec,) = _keyed(read(files.cpu), (b"usage_usec",))
        cpu_ns, swap = usec * 1000, _int(read(files.swap))
    else:
        rss, inactive, faults, major, swap = _keyed(read(files.memory_stat), _V1_KEYS)
        cpu_ns = _int(read(files.cpu))
        limit = 0 if limit >= _V1_UNLIMITED else limit
    return CgroupUsage(
        cpu_usage_core_nanoseconds=cpu_ns,
        memory_usage_bytes=usage,
        memory_working_set_bytes=max(usage - inactive, 0),
        memory_rss_bytes=rss,
        memory_limit_bytes=limit,
        page_faults=faults,
        major_page_faults=major,
        swap_usage_bytes=swap,
        process_count=_int(read(files.pids)),
    )


class Sampler(Generic[T]):
    """Samples one kind of object (containers, or pods) by id, whole lists at a time.

    Each object's files are resolved on its first sample and forgotten (closed)
    once it leaves the live set; a list is read in one worker thread.
    """

    def __init__(self, hierarchies: Hierarchies, reader: CgroupReader, processes: bool) -> None:
        self._hierarchies = hierarchies
        self._reader = reader
        self._processes = processes
        self._files: dict[str, StatsFiles] = {}

    async def sample(
        self,
        cgroups: Mapping[str, str],
        live: Collection[str],
        also: Callable[[str], T] | None = None,
    ) -> dict[str, tuple[CgroupUsage, T | None]]:
        """Sample ``cgroups`` (id -> cgroupfs path); ``also(id)`` runs in the same thread.

        :param live: the ids still worth keeping files open for.
        """
        targets = []
        for key, path in cgroups.items():
            files = self._files.get(key)
            if files is None:
                files = self._files[key] = stats_files(self._hierarchies, path, self._processes)
            targets.append((key, files))
        gone = [self._files.pop(key) for key in list(self._files) if key not in live]
        if not targets and not gone:
            return {}
        reader = self._reader

        def run() -> dict[str, tuple[CgroupUsage, T | None]]:
            with reader.lock:
                for files in gone:
                    reader.forget(files)
                return {
                    key: (read_usage(files, reader), also(key) if also else None)
                    for key, files in targets
                }

        # One worker thread for the whole list, not one per object or file.
        return await asyncio.to_thread(run)


def read_net_dev(netns_path: str, pids: list[int]) -> str | None:
    """``/proc/net/dev`` of the network namespace pinned at ``netns_path``, read through a
    process in it (no thread has to enter it); None when none of ``pids`` is in it.

    A PID counts only while ``/proc/PID/ns/net`` is the pinned namespace, before
    and after the read: a PID reused by another process is never believed.
    """
    try:
        pinned = os.stat(netns_path)
    except OSError:
        return None
    key = (pinned.st_dev, pinned.st_ino)
    for pid in pids:
        ns = f"/proc/{pid}/ns/net"
        try:
            if _ns_key(ns) != key:
                continue
            with open(f"/proc/{pid}/net/dev") as handle:
                text = handle.read()
            if _ns_key(ns) == key:
                return text
        except OSError:
            continue
    return None


def _ns_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino
