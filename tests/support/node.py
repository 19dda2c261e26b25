"""A crio node for runtime tests: busybox and pause images, a private cgroup parent, leak checks."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from crio.api import api_pb2 as api
from support.cri import PAUSE_IMAGE, Cri, pod_config, seed_images
from support.daemon import CrioProcess
from support.vm import shared_templates

__all__ = ["HANDLERS", "Node", "pause_processes", "start_node", "stop_node"]

HANDLERS = ("runc", "crun")


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle if line.split()[4].startswith(str(path))]


def _cgroup_dirs(cgroup_root: str) -> list[str]:
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / cgroup_root.lstrip("/")).exists():
            found.append(str(hierarchy / cgroup_root.lstrip("/")))
    return found


def pause_processes(base: Path) -> dict[int, str]:
    """Running pause processes crio started under ``base``: PID -> their pin path.

    Found as crio marks them (the source of their root tmpfs is ``crio-pause:PIN``),
    read here without crio's code; zombies (no mount namespace left) are not listed.
    """
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/mountinfo", "rb") as handle:
            head = handle.read(4096).decode(errors="replace")
            for line in head.splitlines():
                fields = line.split(" ")
                if fields[4] == "/" and "-" in fields:
                    source = fields[fields.index("-") + 2]
                    if source.startswith(f"crio-pause:{base}/"):
                        found[int(entry)] = source.removeprefix("crio-pause:")
                    break
    return found


@dataclass
class Node:
    """One crio under test, its client, and what a test needs to look at the host."""

    crio: CrioProcess
    cri: Cri
    cgroup_root: str = field(default_factory=lambda: f"/crio-test-{secrets.token_hex(4)}")
    _channel: Any = None

    @property
    def base(self) -> Path:
        return self.crio.base

    def pod(self, **kwargs: Any) -> api.PodSandboxConfig:
        """A pod config with this test's cgroup parent and log directory."""
        config = pod_config(**kwargs)
        if not config.linux.cgroup_parent:
            config.linux.cgroup_parent = f"{self.cgroup_root}/pod-{config.metadata.uid}"
        if not config.log_directory:
            config.log_directory = str(self.base / "pods" / config.metadata.uid)
        return config

    def use_loopback_network(self) -> None:
        """A CNI network of ``lo`` only: pods get their own netns, no bridge, no IP."""
        (self.base / "net.d" / "10-lo.conflist").write_text(
            '{"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}'
        )

    def cgroup_file(self, controller: str, pod: api.PodSandboxConfig, cid: str, name: str) -> str:
        path = Path("/sys/fs/cgroup", controller, pod.linux.cgroup_parent.lstrip("/"))
        return (path / f"crio-{cid}" / name).read_text().strip()

    def restart(self, sig: int = signal.SIGTERM, between: Any = None) -> None:
        """Stop crio with ``sig`` (SIGKILL: a crash), call ``between()``, start it again."""
        self._channel.close()
        code = self.crio.stop(sig)
        assert code == (0 if sig == signal.SIGTERM else -sig), self.crio.log_text()[-2000:]
        if between is not None:
            between()
        self.crio.start()
        self._channel = grpc.insecure_channel(f"unix://{self.crio.socket}")
        self.cri = Cri(self._channel)

    def leftovers(self) -> dict[str, list[str]]:
        pins = []
        ns_dir = self.base / "ns"
        if ns_dir.exists():
            pins = [str(p) for p in ns_dir.rglob("*") if p.is_file()]
        exits = list((self.base / "exits").glob("*")) if (self.base / "exits").exists() else []
        return {
            "mounts": _mounts_under(self.base),
            "namespace pins": pins,
            "cgroups": _cgroup_dirs(self.cgroup_root + "/pod-"),
            "exit files": [str(p) for p in exits],
            "pause processes": [
                f"{pid} ({pin})" for pid, pin in pause_processes(self.base).items()
            ],
        }


def start_node(
    extra: Mapping[str, Mapping[str, Any]]
    | Callable[[Path], Mapping[str, Mapping[str, Any]]]
    | None = None,
    env: Mapping[str, str] | None = None,
    seed: Callable[[Path, Path], None] | None = None,
) -> Node:
    """A started crio with the busybox and pause images; ``seed(root, runroot)`` adds more."""
    for binary in ("/usr/bin/runc", "/usr/bin/crun", "/usr/bin/conmon"):
        if not os.access(binary, os.X_OK):
            pytest.skip(f"{binary} is not installed")
    tables: dict[str, dict[str, Any]] = {
        "crio.image": {"pause_image": PAUSE_IMAGE, "pause_command": "/pause"}
    }

    def all_tables(base: Path) -> dict[str, dict[str, Any]]:
        more = extra(base) if callable(extra) else extra
        merged = {table: dict(keys) for table, keys in tables.items()}
        for table, keys in (more or {}).items():
            merged.setdefault(table, {}).update(keys)
        shared_templates(merged)
        return merged

    process = CrioProcess(all_tables)
    seed_images(process.base / "root", process.base / "runroot")
    if seed is not None:
        seed(process.base / "root", process.base / "runroot")
    process.start(env=env)
    channel = grpc.insecure_channel(f"unix://{process.socket}")
    return Node(process, Cri(channel), _channel=channel)


def stop_node(node: Node) -> None:
    failures: list[str] = []
    try:
        with contextlib.suppress(Exception):
            node.cri.remove_everything()
        leftovers = node.leftovers()
        if any(leftovers.values()):
            # What crio said about it, before its directory (and log) goes.
            failures = [
                line
                for line in node.crio.log_text().splitlines()
                if " failed: " in line
                and ("Remove" in line or "Stop" in line)
                and "NOT_FOUND" not in line
            ]
        node._channel.close()
        node.crio.stop()
    finally:
        for path in _cgroup_dirs(node.cgroup_root):
            for sub in sorted(Path(path).rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                Path(path).rmdir()
        for mount in reversed(_mounts_under(node.base)):
            os.system(f"umount -l {mount} 2>/dev/null")
        node.crio.cleanup()
    assert not any(leftovers.values()), (leftovers, failures[-20:])
