"""The host side of pod VMs: a pod's VM and network namespace, its containers, their logs.

A :class:`VMContainer` receives its container's agent events: output is
appended to the CRI log file (written here, on the host, in conmon's
format) and handed to attached clients; ``exit`` records the exit. When the
VM dies, every container of the pod that has not exited is marked exited
with reason ``VMDied`` and the VM's own reason as the message.

What each object is, is kept in small JSON files (``vm-sandbox.json`` in the
pod's run directory, ``vm-container.json`` in the container's bundle) so a
restarted crio can take the VM over again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crio.oci.runtime import ContainerState, ContainerStats, State
from crio_plugins.runtime_clear import _mounts, _wire
from crio_plugins.runtime_clear._crilog import encode_chunk
from crio_plugins.runtime_clear.vm import VM, VMExit

__all__ = [
    "CONTAINER_STATE",
    "POD_STATE",
    "VM_DIED_REASON",
    "PodVM",
    "VMContainer",
    "is_supervisor",
    "read_json",
    "release_mounts",
    "stats_from_agent",
    "stop_orphan",
    "write_json",
]

log = logging.getLogger("crio.runtime_clear")

POD_STATE = "vm-sandbox.json"
CONTAINER_STATE = "vm-container.json"
#: CRI reason of a container whose pod VM died under it.
VM_DIED_REASON = "VMDied"

Sink = Callable[[str, bytes], None]
#: Events kept per container that is not adopted yet.
MAX_STRAYS = 10_000


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically: a temporary file of this write's own, fsync, rename.

    Two writers never share a temporary file (one's rename would take the
    other's away); a failed write removes its own.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(slots=True)
class VMContainer:
    """One container of a pod VM, as the host sees it."""

    container_id: str
    pod_sandbox_id: str
    name: str
    bundle: Path
    host_dir: Path  # SHARE/ctr/ID on the host
    guest_dir: str  # the same directory in the guest
    log_path: str
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    stop_signal: int = signal.SIGTERM
    own_pid_ns: bool = True
    mounts: list[str] = field(default_factory=list)  # host mount points, rootfs first
    pid: int = 0
    started_at: int = 0
    exit: ContainerState | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    sinks: list[Sink] = field(default_factory=list)
    log_fd: int = -1
    #: ``log_size_max``: past it the log starts over (as conmon's --log-size-max); -1: none.
    log_size_max: int = -1
    log_written: int = 0

    def save(self) -> None:
        write_json(
            self.bundle / CONTAINER_STATE,
            {
                "container_id": self.container_id,
                "pod_sandbox_id": self.pod_sandbox_id,
                "name": self.name,
                "host_dir": str(self.host_dir),
                "guest_dir": self.guest_dir,
                "log_path": self.log_path,
                "tty": self.tty,
                "stdin": self.stdin,
                "stdin_once": self.stdin_once,
                "stop_signal": self.stop_signal,
                "own_pid_ns": self.own_pid_ns,
                "mounts": self.mounts,
                "pid": self.pid,
                "started_at": self.started_at,
            },
        )

    @classmethod
    def load(cls, bundle: Path) -> VMContainer | None:
        data = read_json(bundle / CONTAINER_STATE)
        if data is None:
            return None
        return cls(
            container_id=data["container_id"],
            pod_sandbox_id=data["pod_sandbox_id"],
            name=data.get("name", ""),
            bundle=bundle,
            host_dir=Path(data["host_dir"]),
            guest_dir=data["guest_dir"],
            log_path=data.get("log_path", ""),
            tty=bool(data.get("tty")),
            stdin=bool(data.get("stdin")),
            stdin_once=bool(data.get("stdin_once")),
            stop_signal=int(data.get("stop_signal", signal.SIGTERM)),
            own_pid_ns=bool(data.get("own_pid_ns", True)),
            mounts=list(data.get("mounts", [])),
            pid=int(data.get("pid", 0)),
            started_at=int(data.get("started_at", 0)),
        )

    # -- the CRI log ------------------------------------------------------------------

    def open_log(self) -> None:
        if not self.log_path:
            return
        self.close_log()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self.log_fd = os.open(self.log_path, flags, 0o640)
        self.log_written = os.fstat(self.log_fd).st_size

    def close_log(self) -> None:
        if self.log_fd >= 0:
            os.close(self.log_fd)
            self.log_fd = -1

    def _log(self, stream: str, data: bytes) -> None:
        if self.log_fd < 0:
            return
        records = encode_chunk(stream, data, time.time_ns())
        try:
            if 0 < self.log_size_max < self.log_written + len(records):
                # What conmon does at --log-size-max: the file starts over.
                os.ftruncate(self.log_fd, 0)
                self.log_written = 0
            # O_APPEND writes of a few KiB: as cheap as conmon's own.
            self.log_written += os.write(self.log_fd, records)
        except OSError as exc:
            log.warning("container %s: cannot write its log: %s", self.container_id, exc)

    # -- events -----------------------------------------------------------------------

    def subscribe(self, sink: Sink) -> Callable[[], None]:
        self.sinks.append(sink)
        return lambda: self.sinks.remove(sink) if sink in self.sinks else None

    def on_event(self, event: _wire.Event) -> None:
        log.debug("container %s: event %d %s", self.container_id[:12], event.seq, event.name)
        if event.name == "output":
            data = _wire.decode_data(event.data["data"])
            stream = "stdout" if self.tty else str(event.data["stream"])
            self._log(stream, data)
            for sink in list(self.sinks):
                sink(stream, data)
        elif event.name == "exit":
            code = int(event.data["exit_code"])
            oom = bool(event.data.get("oom_killed"))
            reason = "OOMKilled" if oom else "Completed" if code == 0 else "Error"
            # The host's clock (see ClearRuntime.start_container), when the exit arrives.
            self.exited_with(code, max(self.started_at, time.time_ns()), reason)

    def exited_with(self, code: int, finished_at: int, reason: str, message: str = "") -> None:
        if self.exit is not None:
            return
        self.exit = ContainerState(
            state=State.STOPPED,
            pid=self.pid,
            started_at=self.started_at,
            finished_at=finished_at,
            exit_code=code,
            reason=reason,
            message=message,
        )
        self.exited.set()

    def state(self) -> ContainerState:
        if self.exit is not None:
            return self.exit
        status = State.RUNNING if self.started_at else State.CREATED
        return ContainerState(state=status, pid=self.pid, started_at=self.started_at)


@dataclass(slots=True)
class PodVM:
    """A pod: its pinned network namespace, its VM directory and (once booted) its VM."""

    pod_sandbox_id: str
    run_dir: Path  # core's run directory of the pod
    vm_dir: Path  # the VM's own (short paths: unix sockets)
    netns: str
    hostname: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    accel: str = ""
    supervisor_pid: int = 0
    #: The last agent event handled, as last saved (see ClearRuntime's saver).
    last_seq: int = 0
    vm: VM | None = None
    containers: dict[str, VMContainer] = field(default_factory=dict)
    stopped: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Events for containers not (yet) adopted: after a crio restart, the agent
    #: delivers what it kept before the containers are restored.
    strays: dict[str, list[_wire.Event]] = field(default_factory=dict)
    #: Saves run in worker threads (an RPC's and the event saver's at once):
    #: one at a time, and none once the record is released with the pod.
    _record_lock: threading.Lock = field(default_factory=threading.Lock)
    released: bool = False

    @property
    def share(self) -> Path:
        return self.vm_dir / "share"

    def save(self) -> None:
        with self._record_lock:
            if not self.released:
                self._write()

    def release_record(self) -> None:
        """Remove the pod's record for good: later saves do nothing."""
        with self._record_lock:
            self.released = True
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / POD_STATE).unlink()

    def _write(self) -> None:
        write_json(
            self.run_dir / POD_STATE,
            {
                "pod_sandbox_id": self.pod_sandbox_id,
                "vm_dir": str(self.vm_dir),
                "netns": self.netns,
                "hostname": self.hostname,
                "sysctls": self.sysctls,
                "accel": self.accel,
                "supervisor_pid": self.supervisor_pid,
                "last_seq": self.last_seq,
                "stopped": self.stopped,
            },
        )

    @classmethod
    def load(cls, run_dir: Path) -> PodVM | None:
        data = read_json(run_dir / POD_STATE)
        if data is None:
            return None
        return cls(
            pod_sandbox_id=data["pod_sandbox_id"],
            run_dir=run_dir,
            vm_dir=Path(data["vm_dir"]),
            netns=data.get("netns", ""),
            hostname=data.get("hostname", ""),
            sysctls=dict(data.get("sysctls", {})),
            accel=data.get("accel", ""),
            supervisor_pid=int(data.get("supervisor_pid", 0)),
            last_seq=int(data.get("last_seq", 0)),
            stopped=bool(data.get("stopped")),
        )

    def watch(self, vm: VM) -> None:
        """Route the VM's agent events to the containers; mark them on its death."""
        self.vm = vm
        assert vm.agent is not None
        vm.agent.default_listener = self.stray_event
        for ctr in self.containers.values():
            vm.agent.listen(("container_id", ctr.container_id), ctr.on_event)
        vm.died.add_done_callback(self._vm_ended)

    def adopt(self, ctr: VMContainer) -> None:
        self.containers[ctr.container_id] = ctr
        for event in self.strays.pop(ctr.container_id, []):
            ctr.on_event(event)
        if self.vm is not None and self.vm.agent is not None:
            self.vm.agent.listen(("container_id", ctr.container_id), ctr.on_event)

    def forget(self, container_id: str) -> None:
        self.containers.pop(container_id, None)
        if self.vm is not None and self.vm.agent is not None:
            self.vm.agent.unlisten(("container_id", container_id))

    def stray_event(self, event: _wire.Event) -> None:
        container_id = event.data.get("container_id")
        if not isinstance(container_id, str):
            return  # an exec whose session has ended
        kept = self.strays.setdefault(container_id, [])
        if len(kept) < MAX_STRAYS:
            kept.append(event)

    def _vm_ended(self, died: asyncio.Future[VMExit]) -> None:
        if died.cancelled():
            return
        ended = died.result()
        for ctr in self.containers.values():
            if ctr.exit is None:
                ctr.exited_with(
                    128 + signal.SIGKILL,
                    ended.finished_at,
                    VM_DIED_REASON,
                    f"the pod VM ended: {ended.reason}",
                )
        if not self.stopped:
            log.warning("pod VM %s ended: %s", self.pod_sandbox_id, ended.reason)

    def alive(self) -> bool:
        return self.vm is not None and not self.vm.died.done()

    def seq_changed(self) -> bool:
        """The agent events handled went past what was saved; updates ``last_seq``."""
        if self.vm is None or self.vm.agent is None or self.vm.agent.last_seq == self.last_seq:
            return False
        self.last_seq = self.vm.agent.last_seq
        return True


async def release_mounts(points: list[str]) -> list[str]:
    """Unmount host mount points (last first) in a thread; the ones that failed."""

    def run() -> list[str]:
        failed = []
        for point in reversed(points):
            with contextlib.suppress(FileNotFoundError):
                try:
                    _mounts.unmount(Path(point))
                except OSError as exc:
                    failed.append(f"{point}: {exc}")
        return failed

    return await asyncio.to_thread(run)


def is_supervisor(pod: PodVM) -> bool:
    """The recorded pid is still this pod's supervisor (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pod.supervisor_pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(pod.vm_dir / "vm.json").encode() in cmdline


async def stop_orphan(pod: PodVM, grace: float) -> None:
    """Stop a VM whose agent we could not reach again (after a restart)."""
    log.warning("pod sandbox %s: stopping its unreachable VM", pod.pod_sandbox_id)
    try:
        pidfd = os.pidfd_open(pod.supervisor_pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(pidfd, lambda: gone.done() or gone.set_result(None))
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        await asyncio.wait_for(gone, grace)
    except (ProcessLookupError, TimeoutError) as exc:
        log.warning("pod sandbox %s: its supervisor did not stop: %r", pod.pod_sandbox_id, exc)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def stats_from_agent(data: dict[str, Any]) -> ContainerStats:
    """The agent's ``stats`` answer as a ContainerStats."""
    return ContainerStats(
        timestamp=int(data.get("timestamp") or time.time_ns()),
        cpu_usage_core_nanoseconds=int(data.get("cpu_usage_ns", 0)),
        memory_working_set_bytes=int(data.get("memory_working_set_bytes", 0)),
        memory_usage_bytes=int(data.get("memory_usage_bytes", 0)),
        oom_kill_count=int(data.get("oom_kill_count", 0)),
        memory_rss_bytes=int(data.get("memory_rss_bytes", 0)),
        memory_limit_bytes=int(data.get("memory_limit_bytes", 0)),
        page_faults=int(data.get("page_faults", 0)),
        major_page_faults=int(data.get("major_page_faults", 0)),
        process_count=int(data.get("process_count", 0)),
    )
