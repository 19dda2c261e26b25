"""Start a real crio process with its own directories and talk to it over its socket."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from crio.api import api_pb2, api_pb2_grpc

__all__ = ["CrioProcess", "write_config"]

CRIO = str(Path(sys.executable).with_name("crio"))


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_config(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{"crio.api": {"listen": ...}}`` as a crio.toml file."""
    lines = []
    for table, keys in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in keys.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class CrioProcess:
    """One crio daemon with every directory under a private temporary tree.

    The tree lives under /tmp with a short name, because a unix socket path
    must stay under 108 bytes.
    """

    def __init__(
        self,
        extra: Mapping[str, Mapping[str, Any]]
        | Callable[[Path], Mapping[str, Mapping[str, Any]]]
        | None = None,
    ) -> None:
        """:param extra: tables to add, or a function of the base directory giving them."""
        self.base = Path(tempfile.mkdtemp(prefix="crio-t-", dir="/tmp"))
        if callable(extra):
            extra = extra(self.base)
        self.socket = self.base / "crio.sock"
        (self.base / "net.d").mkdir()
        tables: dict[str, dict[str, Any]] = {
            "crio": {
                "root": str(self.base / "root"),
                "runroot": str(self.base / "runroot"),
                "log_dir": str(self.base / "logs"),
                "state_dir": str(self.base / "state"),
                "version_file": str(self.base / "version"),
            },
            "crio.api": {"listen": str(self.socket)},
            "crio.runtime": {
                "container_exits_dir": str(self.base / "exits"),
                "container_attach_socket_dir": str(self.base / "attach"),
                "namespaces_dir": str(self.base / "ns"),
            },
            "crio.network": {"network_dir": str(self.base / "net.d")},
            # Private runtime state per handler: never the host's /run/runc.
            "crio.runtime.runtimes.runc": {"runtime_root": str(self.base / "rt-runc")},
            "crio.runtime.runtimes.crun": {"runtime_root": str(self.base / "rt-crun")},
        }
        for table, keys in (extra or {}).items():
            tables.setdefault(table, {}).update(keys)
        self.config = write_config(self.base / "crio.conf", tables)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.base / "crio.log"

    def command(self, *args: str) -> list[str]:
        return [CRIO, "--config", str(self.config), "--config-dir", str(self.base), *args]

    def start(
        self,
        *args: str,
        wait: bool = True,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command("--log-level", "debug", *args),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"crio exited with {self.proc.returncode}:\n{self.log_text()}")
            if self.socket.exists():
                try:
                    with self.channel() as channel:
                        grpc.channel_ready_future(channel).result(timeout=1)
                    return
                except grpc.FutureTimeoutError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"crio did not come up in {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @contextmanager
    def channel(self) -> Iterator[grpc.Channel]:
        channel = grpc.insecure_channel(f"unix://{self.socket}")
        try:
            yield channel
        finally:
            channel.close()

    def runtime_stub(self, channel: grpc.Channel) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(channel)

    def image_stub(self, channel: grpc.Channel) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(channel)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal crio and wait for it; return its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def remove_pods(self) -> None:
        """Stop and remove every pod through CRI (a running crio), so nothing stays behind."""
        with self.channel() as channel:
            stub = self.runtime_stub(channel)
            for pod in stub.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30).items:
                stub.StopPodSandbox(
                    api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60
                )
                stub.RemovePodSandbox(
                    api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60
                )

    def cleanup(self) -> None:
        """Remove the pods a test left, stop crio, and release what is left under ``base``.

        Whatever crio could not remove (it was killed, or a test broke it):
        conmon and container processes started for this tree are killed and
        mounts under it unmounted, so that the tree can be deleted.
        """
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(grpc.RpcError):
                self.remove_pods()
            self.proc.kill()
            self.proc.wait()
        _kill_processes_of(self.base)
        _unmount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def _kill_processes_of(base: Path) -> None:
    """SIGKILL conmons (and with them their containers) whose command line names ``base``."""
    marker = str(base).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if marker in cmdline and b"conmon" in cmdline.split(b"\0", 1)[0]:
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)


def _unmount_under(base: Path) -> None:
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    for point in reversed(points):
        if point.startswith(str(base) + "/"):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
