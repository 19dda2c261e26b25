"""Cgroup levels crio makes itself (a pause process's, a pod's missing parents) on the host.

Pods made at the same time share their parent levels, so a level may exist
but be unfinished: another thread made it and has not yet given it (v1
cpuset) its parent's CPUs and memory nodes. Joining a level with an empty
cpuset fails with ENOSPC (seen as "cannot set up the pause process").
"""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from crio_plugins.runtime_runc.cgroups import Hierarchies

HIERARCHIES = Hierarchies.from_host()
CPUSET = HIERARCHIES.v1.get("cpuset", "")
if not CPUSET:
    pytest.skip("no cgroup v1 cpuset hierarchy on this host", allow_module_level=True)


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def test_a_level_made_but_not_yet_filled_by_another_thread_is_filled() -> None:
    parent = f"/crio-test-levels-{secrets.token_hex(4)}"
    leaf = f"{parent}/pod/crio-pause"
    os.mkdir(CPUSET + parent)  # as the other thread's mkdir, before it copies the cpuset
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert _read(f"{CPUSET}{parent}/cpuset.cpus") == ""
        HIERARCHIES.make(leaf)
        for name in ("cpuset.cpus", "cpuset.mems"):
            expected = _read(f"{CPUSET}/{name}")
            assert _read(f"{CPUSET}{parent}/{name}") == expected
            assert _read(f"{CPUSET}{leaf}/{name}") == expected
        HIERARCHIES.attach(sleeper.pid, leaf)  # ENOSPC with an empty cpuset
        assert str(sleeper.pid) in _read(f"{CPUSET}{leaf}/cgroup.procs").split()
    finally:
        sleeper.kill()
        sleeper.wait()
        HIERARCHIES.remove([leaf, f"{parent}/pod", parent])
    assert not os.path.exists(CPUSET + parent)
