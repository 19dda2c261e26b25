"""runtime_runc's byte-in/byte-out parts: CRI logs, inotify events, cgroup and /proc files."""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from crio_plugins.runtime_runc._container import in_cgroup, is_monitor_of, lists_cgroup
from crio_plugins.runtime_runc._proc import parse_net_dev, process_start
from crio_plugins.runtime_runc.cgroups import (
    CgroupUsage,
    Hierarchies,
    parse_cgroup_mounts,
    parse_flat_keyed,
)
from crio_plugins.runtime_runc.cgstats import CgroupReader, read_net_dev, read_usage, stats_files
from crio_plugins.runtime_runc.crilog import parse_records, split_streams
from crio_plugins.runtime_runc.inotify import IN_MOVED_TO, IN_Q_OVERFLOW, parse_events

LOG = (
    b"2024-01-01T00:00:00.000000001+00:00 stdout P abc\n"
    b"2024-01-01T00:00:00.000000002+00:00 stderr F oops\n"
    b"2024-01-01T00:00:00.000000003+00:00 stdout F def\n"
    b"2024-01-01T00:00:00.000000004+00:00 stdout F \n"
    b"garbage line\n"
    b"2024-01-01T00:00:00.000000005+00:00 stdout F trunc"
)


def test_cri_log_records_and_streams() -> None:
    records = parse_records(LOG)
    assert [(r.stream, r.partial, r.content) for r in records] == [
        ("stdout", True, b"abc"),
        ("stderr", False, b"oops"),
        ("stdout", False, b"def"),
        ("stdout", False, b""),
    ]
    assert records[0].timestamp == b"2024-01-01T00:00:00.000000001+00:00"
    assert split_streams(LOG) == (b"abcdef\n\n", b"oops\n")


def _event(wd: int, mask: int, name: bytes) -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, 0, len(padded)) + padded


def test_inotify_events() -> None:
    data = _event(1, IN_MOVED_TO, b"a" * 64) + _event(-1, IN_Q_OVERFLOW, b"") + _event(1, 8, b"x")
    events = parse_events(data)
    assert [(e.mask, e.name) for e in events] == [
        (IN_MOVED_TO, "a" * 64),
        (IN_Q_OVERFLOW, ""),
        (8, "x"),
    ]
    assert parse_events(data[:10]) == []


def test_cgroup_mounts_and_files() -> None:
    mountinfo = (
        "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
        "33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    v1, v2 = parse_cgroup_mounts(mountinfo)
    assert v1 == {
        "cpu": "/sys/fs/cgroup/cpu",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "systemd": "/sys/fs/cgroup/systemd",
    }
    assert v2 == "/sys/fs/cgroup/unified"
    assert parse_flat_keyed("rss 10\ncache 5\nbad\n") == {"rss": 10, "cache": 5}


def _cgroup_tree(tmp_path: Path, unified: bool) -> Hierarchies:
    """One cgroup ``/pod/c`` with known figures, in files under ``tmp_path``."""
    if unified:
        group = tmp_path / "v2" / "pod" / "c"
        group.mkdir(parents=True)
        (group / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
        (group / "memory.current").write_text("10000\n")
        (group / "memory.stat").write_text(
            "anon 3000\ninactive_file 4000\npgfault 7\npgmajfault 1\n"
        )
        (group / "memory.max").write_text("max\n")
        (group / "memory.swap.current").write_text("500\n")
        (group / "memory.events").write_text("oom 1\noom_kill 2\n")
        (group / "pids.current").write_text("3\n")
        return Hierarchies({}, str(tmp_path / "v2"))
    for controller in ("cpuacct", "memory", "pids"):
        (tmp_path / controller / "pod" / "c").mkdir(parents=True)
    (tmp_path / "cpuacct/pod/c/cpuacct.usage").write_text("1500000\n")
    mem = tmp_path / "memory" / "pod" / "c"
    (mem / "memory.usage_in_bytes").write_text("10000\n")
    (mem / "memory.stat").write_text(
        "cache 1\nrss 2\ntotal_rss 3000\ntotal_inactive_file 4000\ntotal_pgfault 7\n"
        "total_pgmajfault 1\ntotal_swap 500\n"
    )
    (mem / "memory.limit_in_bytes").write_text(str(2**63 - 4096))
    (mem / "memory.memsw.usage_in_bytes").write_text("10500\n")
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (tmp_path / "pids/pod/c/pids.current").write_text("3\n")
    return Hierarchies({c: str(tmp_path / c) for c in ("cpuacct", "memory", "pids")}, "")


@pytest.mark.parametrize("unified", [False, True])
def test_cgroup_usage_from_files(tmp_path: Path, unified: bool) -> None:
    hierarchies = _cgroup_tree(tmp_path, unified)
    usage = hierarchies.usage("/pod/c")
    assert usage.cpu_usage_core_nanoseconds == 1_500_000
    assert (usage.memory_usage_bytes, usage.memory_working_set_bytes) == (10000, 6000)
    assert (usage.memory_rss_bytes, usage.page_faults, usage.major_page_faults) == (3000, 7, 1)
    assert (usage.memory_limit_bytes, usage.oom_kill_count, usage.process_count) == (0, 2, 3)
    assert usage.swap_usage_bytes == 500
    assert hierarchies.usage("/gone").memory_usage_bytes == 0
    assert hierarchies.missing_levels("/pod/c/new/deeper") == ["/pod/c/new", "/pod/c/new/deeper"]


@pytest.mark.parametrize("unified", [False, True])
def test_cri_stats_read_the_same_figures_from_fewer_files(tmp_path: Path, unified: bool) -> None:
    hierarchies = _cgroup_tree(tmp_path, unified)
    full = hierarchies.usage("/pod/c")
    reader = CgroupReader(budget=100)
    for processes in (False, True):
        usage = read_usage(stats_files(hierarchies, "/pod/c", processes), reader)
        assert usage == replace(
            full,
            oom_kill_count=0,  # CRI carries neither OOM kills nor block I/O
            block_read_bytes=0,
            block_write_bytes=0,
            process_count=full.process_count if processes else 0,
        )
    assert read_usage(stats_files(hierarchies, "/gone", True), reader) == CgroupUsage()
    assert len(reader) == (6 if unified else 5)  # kept open for the next sample
    limited = (
        (tmp_path / "v2/pod/c/memory.max")
        if unified
        else (tmp_path / "memory/pod/c/memory.limit_in_bytes")
    )
    limited.write_text("65536\n")  # read again through the open file
    files = stats_files(hierarchies, "/pod/c", True)
    assert read_usage(files, reader).memory_limit_bytes == 65536
    reader.forget(files)
    assert len(reader) == 0
    assert read_usage(files, CgroupReader(budget=0)).memory_limit_bytes == 65536  # none kept
    reader.close()


def test_net_dev_is_read_through_a_process_in_the_namespace() -> None:
    mine = "/proc/self/ns/net"
    text = read_net_dev(mine, [2**22 + 1, os.getpid()])
    assert text is not None and "lo:" in text
    assert read_net_dev(mine, [2**22 + 1]) is None  # no such process: the caller enters it
    assert read_net_dev("/nonexistent/netns", [os.getpid()]) is None


def test_net_dev_and_process_start() -> None:
    text = (
        "Inter-|   Receive                            |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes ...\n"
        "    lo:     100       1    0    0    0     0          0         0      100 1 0 0 0 0 0 0\n"
        "  eth0: 2000 20 3 0 0 0 0 0 4000 40 5 0 0 0 0 0\n"
    )
    [eth0] = parse_net_dev(text)
    assert (eth0.name, eth0.rx_bytes, eth0.rx_errors, eth0.tx_bytes, eth0.tx_errors) == (
        "eth0",
        2000,
        3,
        4000,
        5,
    )
    assert process_start(os.getpid()) > 0
    assert process_start(2**22 + 1) == 0


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (b"/usr/bin/conmon\0--api-version\x001\0-c\0abc\0-u\0abc\0", True),
        (b"conmon\0-c\0abc\0", True),
        (b"/usr/bin/conmon\0-c\0abcd\0", False),  # another container's monitor
        (b"/usr/bin/conmon\0-c\0abc\0-e\0", False),  # an exec session's monitor
        (b"/bin/sleep\x00100\0-c\0abc\0", False),  # a reused PID
        (b"/usr/bin/conmon\0-c\0", False),
        (b"", False),
    ],
)
def test_a_monitor_is_known_by_its_command_line(cmdline: bytes, expected: bool) -> None:
    assert is_monitor_of(cmdline.split(b"\0"), "abc") is expected


PROC_CGROUP = (
    "12:hugetlb:/\n11:memory:/crio-test-1/pod-abc/crio-0123\n0::/crio-test-1/pod-abc/crio-0123\n"
)


@pytest.mark.parametrize(
    ("cgroups_path", "expected"),
    [
        ("/crio-test-1/pod-abc/crio-0123", True),
        ("/crio-test-1/pod-abc/crio-0123/", True),
        ("/crio-test-1/pod-abc/crio-012", False),  # a prefix of the leaf is not the leaf
        ("/crio-test-1/pod-abc/crio-9999", False),
    ],
)
def test_a_container_pid_is_known_by_its_cgroup(cgroups_path: str, expected: bool) -> None:
    assert lists_cgroup(PROC_CGROUP, cgroups_path) is expected


def test_this_process_is_in_no_container_cgroup() -> None:
    assert not in_cgroup(os.getpid(), "/crio-test-1/pod-abc/crio-0123")
