"""Real containers for the streaming tests: busybox under runc or crun, conmon for attach.

Each container has private everything: a runtime root, a bundle, a network
namespace with a random name (loopback up) and a cgroup named after the
container; all are removed after the test, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "cat", "echo", "sleep", "stty", "nc", "true", "ls", "printf", "read", "dd", "head")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


@dataclass
class Container:
    """A running container the test started directly with the OCI runtime (or conmon)."""

    container_id: str
    runtime_path: str
    runtime_root: str
    bundle: Path
    netns: str | None
    process: dict[str, Any]
    attach_socket: Path | None = None
    ctl_fifo: Path | None = None

    def runtime(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.runtime_path, "--root", self.runtime_root, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def pids(self) -> list[int]:
        out = self.runtime("ps", "--format", "json", self.container_id).stdout
        return json.loads(out) or []


def _make_bundle(base: Path, args: Sequence[str], netns: str | None, terminal: bool) -> Path:
    bundle = base / "bundle"
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    for directory in ("proc", "dev", "sys", "tmp"):
        (rootfs / directory).mkdir(exist_ok=True)
    subprocess.run([_tool("runc"), "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = list(args)
    config["process"]["terminal"] = terminal
    config["process"]["env"] = ["PATH=/bin", "TERM=xterm"]
    config["root"]["readonly"] = False
    namespaces = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
    if netns is not None:
        namespaces.append({"type": "network", "path": netns})
    config["linux"]["namespaces"] = namespaces
    config["linux"]["cgroupsPath"] = f"/crio-test-{base.name}"
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


class Containers:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="crio-st-", dir="/tmp"))
        self.started: list[Container] = []
        self.netns: list[str] = []
        self.conmons: list[int] = []

    def new_netns(self) -> str:
        name = f"crio-st-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.netns.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return f"/run/netns/{name}"

    def run(
        self,
        args: Sequence[str],
        *,
        runtime: str = "runc",
        host_network: bool = False,
    ) -> Container:
        """``RUNTIME run -d``: stdio is /dev/null; fine for exec and port forward."""
        cid = f"st-{secrets.token_hex(5)}"
        base = self.base / cid
        netns = None if host_network else self.new_netns()
        bundle = _make_bundle(base, args, netns, terminal=False)
        root = str(base / "root")
        process = json.loads((bundle / "config.json").read_text())["process"]
        container = Container(cid, _tool(runtime), root, bundle, netns, process)
        self.started.append(container)
        errors = base / "run.err"
        with open(os.devnull, "rb+") as null, open(errors, "wb") as err:
            # The container inherits these: a pipe would never see EOF.
            proc = subprocess.run(
                [container.runtime_path, "--root", root, "run", "-d", "--bundle", str(bundle), cid],
                stdin=null,
                stdout=null,
                stderr=err,
                timeout=60,
            )
        if proc.returncode != 0:
            pytest.fail(f"{runtime} run failed: {errors.read_text()}")
        return container

    def run_under_conmon(self, args: Sequence[str], *, stdin: bool, tty: bool) -> Container:
        """Create through conmon (which keeps stdio and serves the attach socket), then start."""
        conmon = _tool("conmon")
        cid = f"st-{secrets.token_hex(5)}"
        base = self.base / cid
        bundle = _make_bundle(base, args, self.new_netns(), terminal=tty)
        root = str(base / "root")
        attach_dir, exits = base / "attach", base / "exits"
        attach_dir.mkdir()
        exits.mkdir()
        container = Container(
            cid,
            _tool("runc"),
            root,
            bundle,
            None,
            json.loads((bundle / "config.json").read_text())["process"],
            attach_socket=attach_dir / cid / "attach",
            ctl_fifo=bundle / "ctl",
        )
        self.started.append(container)
        command = [
            conmon, "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
            "-r", container.runtime_path, "--runtime-arg", f"--root={root}",
            "-b", str(bundle), "-p", str(bundle / "pidfile"), "-P", str(bundle / "conmon.pid"),
            "-l", f"k8s-file:{base / 'ctr.log'}", "--exit-dir", str(exits),
            "--socket-dir-path", str(attach_dir), "--log-level", "debug", "--syslog",
        ]  # fmt: skip
        if stdin:
            command += ["-i", "--leave-stdin-open"]
        if tty:
            command.append("-t")
        subprocess.run(command, cwd=bundle, check=True, timeout=60)
        self.conmons.append(int((bundle / "conmon.pid").read_text()))
        deadline = time.monotonic() + 30
        # conmon runs `runc create` after it daemonized: wait for the container's pid file.
        while not (bundle / "pidfile").exists() or not container.attach_socket.exists():  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail(f"conmon did not create {cid}: {(base / 'ctr.log')}")
            time.sleep(0.01)
        container.runtime("start", cid)
        return container

    def cleanup(self) -> None:
        for container in self.started:
            container.runtime("kill", container.container_id, "KILL", check=False)
        for container in self.started:
            for _ in range(100):
                done = container.runtime("delete", "--force", container.container_id, check=False)
                if done.returncode == 0:
                    break
                time.sleep(0.05)
        for pid in self.conmons:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        for name in self.netns:
            subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(self.base, ignore_errors=True)
