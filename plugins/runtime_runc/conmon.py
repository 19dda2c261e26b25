"""conmon: creating a container under it, and running a command in one (exec sync).

The handshake (conmon 2.x, ``--api-version 1``): two socket pairs passed as
``_OCI_SYNCPIPE`` and ``_OCI_STARTPIPE``. We write one byte on the start pipe
once conmon may go on (it waits for it before forking the runtime); conmon
answers on the sync pipe with one JSON object per line: ``{"data": PID}``
when the runtime created the process, ``{"data": -1, "message": "..."}`` when
it failed (the message is the runtime's stderr). In exec mode with
``--sync`` the first object carries the exec'd process's PID and a second
one its exit code. ExecSync's timeout is kept here rather than with conmon's
``-T``, which reports the timeout but leaves the process running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crio.errors import DeadlineExceededError, OCIRuntimeError
from crio_plugins.runtime_runc.crilog import split_streams

__all__ = ["ConmonSettings", "create_container", "exec_sync"]

#: ExecSync output is capped (CVE-2022-1708): 16 MiB over both streams.
EXEC_OUTPUT_MAX = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConmonSettings:
    """What every conmon of one handler is started with."""

    conmon_path: str
    runtime_path: str
    runtime_root: str
    exits_dir: str
    attach_dir: str
    env: Sequence[str] = ()
    log_level: str = "info"
    log_size_max: int = -1
    log_to_journald: bool = False
    no_pivot: bool = False
    #: cgroup_manager = "systemd": runc/crun make each container's scope over D-Bus.
    systemd_cgroup: bool = False

    def base_args(self, container_id: str, name: str, uuid: str, bundle: Path) -> list[str]:
        systemd = ["-s", "--runtime-arg", "--systemd-cgroup"] if self.systemd_cgroup else []
        return [
            self.conmon_path,
            "--api-version", "1",
            "-c", container_id,
            "-u", uuid,
            "-n", name,
            "-r", self.runtime_path,
            "-b", str(bundle),
            "--socket-dir-path", self.attach_dir,
            "--runtime-arg", f"--root={self.runtime_root}",
            "--log-level", self.log_level,
            *systemd,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(item.split("=", 1) for item in self.env if "=" in item)
        env.setdefault("PATH", os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
        return env


class _Pipes:
    """The sync and start socket pairs of one conmon."""

    def __init__(self) -> None:
        self.sync, self._sync_child = socket.socketpair()
        self.start, self._start_child = socket.socketpair()
        self.sync.setblocking(False)
        self._buffer = b""

    @property
    def child_fds(self) -> tuple[int, int]:
        return self._sync_child.fileno(), self._start_child.fileno()

    def env(self) -> dict[str, str]:
        sync_fd, start_fd = self.child_fds
        return {"_OCI_SYNCPIPE": str(sync_fd), "_OCI_STARTPIPE": str(start_fd)}

    def spawned(self) -> None:
        """Close our copies of the child ends and let conmon go on."""
        self._sync_child.close()
        self._start_child.close()
        self.start.send(b"\0")

    async def message(self) -> dict[str, Any] | None:
        """The next JSON line conmon wrote, or None at EOF."""
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buffer:
            chunk = await loop.sock_recv(self.sync, 4096)
            if not chunk:
                if self._buffer.strip():
                    break
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            return {"data": -1, "message": f"conmon sent {line[:200]!r}"}
        return message if isinstance(message, dict) else {"data": -1, "message": repr(message)}

    def close(self) -> None:
        for sock in (self.sync, self.start, self._sync_child, self._start_child):
            sock.close()


def _stderr_text(data: bytes) -> str:
    lines = [
        line
        for line in data.decode("utf-8", "replace").splitlines()
        if line.strip() and "oom_score_adj" not in line
    ]
    return "; ".join(lines)


async def create_container(
    settings: ConmonSettings,
    *,
    container_id: str,
    name: str,
    bundle: Path,
    log_path: str,
    tty: bool = False,
    stdin: bool = False,
    stdin_once: bool = False,
    place: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """Start conmon, which runs ``RUNTIME create``; return the container's PID.

    conmon runs with the bundle as its working directory (its ``oom`` file
    lands there) and keeps running as the container's monitor.

    :param place: called with conmon's PID before conmon may go on (it waits
        for the start pipe), to move it into a cgroup of its own: the monitor
        it forks inherits that cgroup.

    :raises OCIRuntimeError: with the runtime's or conmon's own message.
    """
    args = settings.base_args(container_id, name, container_id, bundle)
    args += [
        "-p", str(bundle / "pidfile"),
        "-P", str(bundle / "conmon-pidfile"),
        "-l", f"k8s-file:{log_path}",
        "--exit-dir", settings.exits_dir,
        "--persist-dir", str(bundle),
        "--syslog",
    ]  # fmt: skip
    if tty:
        args.append("-t")
    if stdin:
        args.append("-i")
        if not stdin_once:
            args.append("--leave-stdin-open")
    if settings.log_to_journald:
        args += ["-l", "journald:"]
    if settings.log_size_max > 0:
        args += ["--log-size-max", str(settings.log_size_max)]
    if settings.no_pivot:
        args.append("--no-pivot")
    pipes = _Pipes()
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            pass_fds=pipes.child_fds,
            env={**settings.environment(), **pipes.env()},
            cwd=bundle,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        if place is not None:
            try:
                await place(proc.pid)
            except BaseException:
                proc.kill()
                await proc.wait()
                raise
        pipes.spawned()
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise OCIRuntimeError(
                f"container {container_id}: conmon exited with {proc.returncode}: "
                f"{_stderr_text(err) or 'no message'}"
            )
        message = await pipes.message()
    finally:
        pipes.close()
    if message is None:
        raise OCIRuntimeError(
            f"container {container_id}: conmon ended without reporting the container's PID"
            + (f": {_stderr_text(err)}" if _stderr_text(err) else "")
        )
    pid = int(message.get("data", -1))
    if pid <= 0:
        text = str(message.get("message", "")).strip() or "no message"
        raise OCIRuntimeError(f"container {container_id}: runtime create failed: {text}")
    return pid


async def exec_sync(
    settings: ConmonSettings,
    *,
    container_id: str,
    name: str,
    process: dict[str, Any],
    work_dir: Path,
    timeout: float,
) -> tuple[int, bytes, bytes]:
    """Run ``process`` in the container through conmon's exec mode; collect its output.

    :param work_dir: a directory for this exec's files; created and removed here.
    :returns: (exit code, stdout, stderr), each stream as the process wrote it.
    :raises DeadlineExceededError: when ``timeout`` (seconds, 0: none) fired;
        the process has been killed by then.
    :raises OCIRuntimeError: when the runtime could not start the process.
    """
    exec_id = secrets.token_hex(8)
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_path = work_dir / "process.json"
    log_path = work_dir / "exec.log"
    spec_path.write_text(json.dumps(process))
    args = settings.base_args(container_id, name, exec_id, work_dir)
    args += [
        "-p", str(work_dir / "pidfile"),
        "-e",
        "--exec-process-spec", str(spec_path),
        "-l", f"k8s-file:{log_path}",
        "--log-global-size-max", str(EXEC_OUTPUT_MAX),
        "--sync",
    ]  # fmt: skip
    pipes = _Pipes()
    timed_out = False
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            pass_fds=pipes.child_fds,
            env={**settings.environment(), **pipes.env()},
            cwd=work_dir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        pipes.spawned()
        try:
            started = await pipes.message()
            pid = int((started or {}).get("data", -1))
            finished = None
            if pid > 0:
                try:
                    finished = await asyncio.wait_for(pipes.message(), timeout or None)
                except TimeoutError:
                    # conmon's own -T leaves the process running: kill it while it is
                    # still conmon's unreaped child (so the PID cannot be another's).
                    timed_out = True
                    _kill(pid)
                    finished = await pipes.message()
            _, err = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        output = await asyncio.to_thread(_read_capped, log_path)
    finally:
        pipes.close()
        await asyncio.to_thread(_cleanup, work_dir, Path(settings.attach_dir) / exec_id)
    if timed_out:
        raise DeadlineExceededError(
            f"container {container_id}: exec timed out after {timeout:g} seconds"
        )
    if started is None or int(started.get("data", -1)) <= 0:
        text = str((started or {}).get("message", "")).strip() or _stderr_text(err)
        raise OCIRuntimeError(f"container {container_id}: exec failed: {text or 'no message'}")
    if finished is None:
        raise OCIRuntimeError(
            f"container {container_id}: conmon ended without the exec's exit code: "
            f"{_stderr_text(err) or 'no message'}"
        )
    code = int(finished.get("data", -1))
    message = str(finished.get("message", ""))
    if code == -1:
        raise OCIRuntimeError(f"container {container_id}: exec failed: {message or 'no message'}")
    stdout, stderr = split_streams(output)
    return code, stdout, stderr


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _read_capped(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(EXEC_OUTPUT_MAX * 2)
    except FileNotFoundError:
        return b""


def _cleanup(work_dir: Path, attach_link: Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        attach_link.unlink()
