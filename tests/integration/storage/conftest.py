"""Storage integration fixtures: private store roots, private containers config, cleanup."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crio.storage.mount import unmount


@dataclass
class StoreDirs:
    base: Path
    root: Path
    runroot: Path
    env: dict[str, str]  # for skopeo/podman: private storage.conf, policy, registries

    def ref(self, name: str, driver: str = "overlay") -> str:
        return f"containers-storage:[{driver}@{self.root}+{self.runroot}]{name}"

    def skopeo(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["skopeo", "--policy", str(self.base / "policy.json"), *args]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check)

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [
            "podman", "--root", str(self.root), "--runroot", str(self.runroot),
            "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
            "--events-backend", "file", "--tmpdir", str(self.base / "podman-tmp"), *args,
        ]  # fmt: skip
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check)


def _unmount_under(path: Path) -> None:
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    for point in sorted((p for p in points if p.startswith(str(path) + "/")), reverse=True):
        unmount(point)


@pytest.fixture
def dirs() -> Iterator[StoreDirs]:
    base = Path(tempfile.mkdtemp(prefix="crio-st-", dir="/tmp"))
    conf = base / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{base}/root"\nrunroot = "{base}/run"\n'
    )
    (base / "policy.json").write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
    (base / "registries.conf").write_text("")
    (base / "containers.conf").write_text("")
    env = {
        **os.environ,
        "CONTAINERS_STORAGE_CONF": str(conf),
        "CONTAINERS_REGISTRIES_CONF": str(base / "registries.conf"),
        "CONTAINERS_CONF": str(base / "containers.conf"),
        "TMPDIR": str(base),
    }
    yield StoreDirs(base, base / "root", base / "run", env)
    _unmount_under(base)
    shutil.rmtree(base, ignore_errors=True)
