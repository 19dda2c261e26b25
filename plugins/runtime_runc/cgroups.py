"""cgroupfs: where the hierarchies are, what a cgroup uses, and removing the pod's own.

Works on cgroup v1 (one hierarchy per controller, as on this project's
hybrid hosts) and on the unified v2 hierarchy. Readers take a cgroupfs path
("/kubepods/pod1/crio-ID") and return zeros for files that are missing, so
that a container that is gone reads as idle rather than failing.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from crio_plugins.runtime_runc.systemd import cgroup_path as systemd_cgroup_path

__all__ = [
    "CgroupUsage",
    "Hierarchies",
    "parse_blkio_v1",
    "parse_cgroup_mounts",
    "parse_flat_keyed",
    "parse_io_stat_v2",
]


@dataclass(frozen=True, slots=True)
class CgroupUsage:
    """One sample of a cgroup's CPU and memory use."""

    cpu_usage_core_nanoseconds: int = 0
    memory_usage_bytes: int = 0
    memory_working_set_bytes: int = 0
    memory_rss_bytes: int = 0
    memory_limit_bytes: int = 0
    page_faults: int = 0
    major_page_faults: int = 0
    oom_kill_count: int = 0
    swap_usage_bytes: int = 0
    process_count: int = 0
    block_read_bytes: int = 0
    block_write_bytes: int = 0


def parse_cgroup_mounts(mountinfo: str) -> tuple[dict[str, str], str]:
    """(v1 controller -> mount point, v2 mount point or "") from a mountinfo text."""
    v1: dict[str, str] = {}
    v2 = ""
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
        if fstype == "cgroup2":
            v2 = v2 or fields[4]
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in ("rw", "ro") or option.startswith("relatime"):
                    continue
                name = option.removeprefix("name=")
                v1.setdefault(name, fields[4])
    return v1, v2


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events) as a dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def parse_blkio_v1(text: str) -> tuple[int, int]:
    """(read, written) bytes from a v1 ``blkio.*io_service_bytes`` file (``8:0 Read 4096``)."""
    read = written = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2].isdigit():
            if fields[1] == "Read":
                read += int(fields[2])
            elif fields[1] == "Write":
                written += int(fields[2])
    return read, written


def parse_io_stat_v2(text: str) -> list[dict[str, int]]:
    """v2 ``io.stat``: one ``{"rbytes": .., "wbytes": ..}`` per device line."""
    devices = []
    for line in text.splitlines():
        values = {}
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if value.isdigit():
                values[key] = int(value)
        devices.append(values)
    return devices


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _read_int(path: str) -> int:
    text = _read(path).strip()
    if not text or text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return 0


#: memory.limit_in_bytes reads as this (page-rounded LONG_MAX) when unlimited.
_V1_UNLIMITED = 1 << 62


class Hierarchies:
    """The host's cgroup mounts, read once."""

    def __init__(self, v1: dict[str, str], v2: str) -> None:
        self.v1 = v1
        self.v2 = v2
        #: True when the host runs cgroup v2 only (no v1 controllers).
        self.unified_only = bool(v2) and not v1

    @classmethod
    def from_host(cls) -> Hierarchies:
        with open("/proc/self/mountinfo") as handle:
            v1, v2 = parse_cgroup_mounts(handle.read())
        return cls(v1, v2)

    def mount_points(self) -> list[str]:
        points = list(dict.fromkeys(self.v1.values()))
        if self.unified_only or self.v2:
            points.append(self.v2)
        return points

    def missing_levels(self, cgroup_path: str) -> list[str]:
        """The levels of ``cgroup_path`` that do not exist yet (shallowest first)."""
        parts = [p for p in cgroup_path.split("/") if p]
        probe = self.v1.get("memory") or self.v1.get("pids") or self.v2
        if not probe:
            return []
        missing = []
        for depth in range(1, len(parts) + 1):
            level = "/" + "/".join(parts[:depth])
            if not os.path.isdir(probe + level):
                missing.append(level)
        return missing

    def remove(self, levels: Iterable[str]) -> list[str]:
        """rmdir ``levels`` (deepest first) in every hierarchy; return the deepest still busy.

        A shallower level may be shared with other pods created at the same
        time; it is left alone when busy.
        """
        ordered = sorted(levels, key=len, reverse=True)
        busy = []
        for i, level in enumerate(ordered):
            for mount_point in self.mount_points():
                try:
                    os.rmdir(mount_point + level)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                        raise
                    if i == 0:
                        busy.append(mount_point + level)
        return busy

    def make(self, cgroup_path: str) -> None:
        """Make cgroupfs path ``cgroup_path`` in every hierarchy, with its missing levels
        (as runc does for a container: a new v1 cpuset level gets its parent's CPUs and
        memory nodes, or no process may join it).

        Pods made at the same time share their parent levels: a level another
        thread has just made may still have an empty cpuset (its maker fills it
        right after), so an existing level's cpuset is filled here too (joining an
        empty one fails with ENOSPC); a level another pod's removal has just taken
        away is made again.
        """
        parts = [p for p in cgroup_path.split("/") if p]
        for mount_point in self.mount_points():
            for attempt in range(3):
                try:
                    self._make_levels(mount_point, parts)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise

    def _make_levels(self, mount_point: str, parts: list[str]) -> None:
        cpuset = mount_point == self.v1.get("cpuset")
        path = mount_point
        for part in parts:
            parent, path = path, f"{path}/{part}"
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o755)
            if cpuset:
                for name in ("cpuset.cpus", "cpuset.mems"):
                    if not _read(f"{path}/{name}").strip():
                        with open(f"{path}/{name}", "w") as handle:
                            handle.write(_read(f"{parent}/{name}"))

    def attach(self, pid: int, cgroup_path: str) -> None:
        """Move process ``pid`` into ``cgroup_path`` (made by :meth:`make`) everywhere."""
        for mount_point in self.mount_points():
            with open(f"{mount_point}{cgroup_path}/cgroup.procs", "w") as handle:
                handle.write(str(pid))

    def pids(self, cgroup_path: str) -> list[int]:
        """The processes in a cgroup (v1: the pids or memory hierarchy)."""
        cgroup_path = systemd_cgroup_path(cgroup_path)
        base = self.v2 if self.unified_only else (self.v1.get("pids") or self.v1.get("memory"))
        if not base:
            return []
        text = _read(f"{base}{cgroup_path}/cgroup.procs")
        return [int(line) for line in text.split()]

    def frozen(self, cgroup_path: str) -> bool:
        """Whether the cgroup is frozen (paused): v1 freezer.state, v2 cgroup.freeze."""
        cgroup_path = systemd_cgroup_path(cgroup_path)
        if not cgroup_path:
            return False
        freezer = self.v1.get("freezer")
        if freezer:
            return _read(f"{freezer}{cgroup_path}/freezer.state").strip() in ("FROZEN", "FREEZING")
        if self.v2:
            return _read(f"{self.v2}{cgroup_path}/cgroup.freeze").strip() == "1"
        return False

    def usage(self, cgroup_path: str) -> CgroupUsage:
        """Sample CPU and memory use of a cgroup and everything below it."""
        cgroup_path = systemd_cgroup_path(cgroup_path)
        if self.unified_only:
            return self._usage_v2(f"{self.v2}{cgroup_path}")
        return self._usage_v1(cgroup_path)

    def _usage_v1(self, path: str) -> CgroupUsage:
        cpuacct = self.v1.get("cpuacct", "")
        memory = self.v1.get("memory", "")
        pids = self.v1.get("pids", "")
        stat = parse_flat_keyed(_read(f"{memory}{path}/memory.stat")) if memory else {}
        usage = _read_int(f"{memory}{path}/memory.usage_in_bytes") if memory else 0
        inactive = stat.get("total_inactive_file", 0)
        limit = _read_int(f"{memory}{path}/memory.limit_in_bytes") if memory else 0
        oom = parse_flat_keyed(_read(f"{memory}{path}/memory.oom_control")) if memory else {}
        swap_total = _read_int(f"{memory}{path}/memory.memsw.usage_in_bytes") if memory else 0
        blkio = self.v1.get("blkio", "")
        read, written = (
            parse_blkio_v1(_read(f"{blkio}{path}/blkio.throttle.io_service_bytes"))
            if blkio
            else (0, 0)
        )
        return CgroupUsage(
            cpu_usage_core_nanoseconds=_read_int(f"{cpuacct}{path}/cpuacct.usage")
            if cpuacct
            else 0,
            memory_usage_bytes=usage,
            memory_working_set_bytes=max(usage - inactive, 0),
            memory_rss_bytes=stat.get("total_rss", 0),
            memory_limit_bytes=0 if limit >= _V1_UNLIMITED else limit,
            page_faults=stat.get("total_pgfault", 0),
            major_page_faults=stat.get("total_pgmajfault", 0),
            oom_kill_count=oom.get("oom_kill", 0),
            swap_usage_bytes=max(swap_total - usage, 0) if swap_total else 0,
            process_count=_read_int(f"{pids}{path}/pids.current") if pids else 0,
            block_read_bytes=read,
            block_write_bytes=written,
        )

    @staticmethod
    def _usage_v2(path: str) -> CgroupUsage:
        cpu = parse_flat_keyed(_read(f"{path}/cpu.stat"))
        stat = parse_flat_keyed(_read(f"{path}/memory.stat"))
        events = parse_flat_keyed(_read(f"{path}/memory.events"))
        usage = _read_int(f"{path}/memory.current")
        io_stat = parse_io_stat_v2(_read(f"{path}/io.stat"))
        return CgroupUsage(
            cpu_usage_core_nanoseconds=cpu.get("usage_usec", 0) * 1000,
            memory_usage_bytes=usage,
            memory_working_set_bytes=max(usage - stat.get("inactive_file", 0), 0),
            memory_rss_bytes=stat.get("anon", 0),
            memory_limit_bytes=_read_int(f"{path}/memory.max"),
            page_faults=stat.get("pgfault", 0),
            major_page_faults=stat.get("pgmajfault", 0),
            oom_kill_count=events.get("oom_kill", 0),
            swap_usage_bytes=_read_int(f"{path}/memory.swap.current"),
            process_count=_read_int(f"{path}/pids.current"),
            block_read_bytes=sum(v.get("rbytes", 0) for v in io_stat),
            block_write_bytes=sum(v.get("wbytes", 0) for v in io_stat),
        )


def hugetlb_mounted(hierarchies: Hierarchies) -> bool:
    """Whether hugetlb has a v1 hierarchy (crun needs it on hybrid hosts)."""
    return "hugetlb" in hierarchies.v1


def v2_controllers(hierarchies: Hierarchies) -> set[str]:
    if not hierarchies.v2:
        return set()
    return set(_read(str(Path(hierarchies.v2) / "cgroup.controllers")).split())
