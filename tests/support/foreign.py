"""A container crio did not make: run straight by runc or crun, as buildah or a script would."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ForeignContainer"]

BUSYBOX = "/bin/busybox"


@dataclass
class ForeignContainer:
    """``RUNTIME --root ROOT run -d`` of a busybox ``sleep``, with its bundle in ``base``."""

    runtime: str
    root: Path
    base: Path
    container_id: str = ""

    def __post_init__(self) -> None:
        self.container_id = self.container_id or f"foreign-{secrets.token_hex(4)}"
        self.bundle = self.base / self.container_id

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.runtime, f"--root={self.root}", *args],
            capture_output=True,
            text=True,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> None:
        rootfs = self.bundle / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
        subprocess.run([self.runtime, "spec"], cwd=self.bundle, check=True, capture_output=True)
        config = json.loads((self.bundle / "config.json").read_text())
        config["process"]["args"] = ["/bin/busybox", "sleep", "600"]
        config["process"]["terminal"] = False
        config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        config["linux"]["cgroupsPath"] = f"/crio-foreign-{self.container_id}"
        config["annotations"] = {"org.example.owner": "not-crio"}
        (self.bundle / "config.json").write_text(json.dumps(config))
        # The container inherits the runtime's stdio: a file, so that nothing waits on it.
        with open(self.base / f"{self.container_id}.log", "wb") as log:
            proc = subprocess.run(
                [self.runtime, f"--root={self.root}", "run", "-d", "-b", str(self.bundle),
                 self.container_id],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False, timeout=60,
            )  # fmt: skip
        assert proc.returncode == 0, (self.base / f"{self.container_id}.log").read_text()

    def status(self) -> str:
        """ "running", "stopped", ... or "gone" when the runtime no longer knows it."""
        proc = self._run("state", self.container_id, check=False)
        if proc.returncode != 0:
            return "gone"
        return str(json.loads(proc.stdout).get("status"))

    def remove(self) -> None:
        self._run("kill", self.container_id, "KILL", check=False)
        self._run("delete", "--force", self.container_id, check=False)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            group = hierarchy / f"crio-foreign-{self.container_id}"
            if group.is_dir():
                with contextlib.suppress(OSError):
                    os.rmdir(group)
        shutil.rmtree(self.bundle, ignore_errors=True)
        (self.base / f"{self.container_id}.log").unlink(missing_ok=True)
