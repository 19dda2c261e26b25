"""RuncRuntime: the ``Runtime`` of runtime_type "oci", any runc-compatible CLI under conmon.

Containers are created by conmon (``RUNTIME create``), which stays as their
monitor: it owns their stdio, writes the CRI log, serves the attach socket
and the ``ctl`` FIFO, and writes the exit code to ``EXITS_DIR/ID``. The
runtime watches that directory with inotify, so an exit is known the moment
conmon writes it. Signals go straight to the container's init process
through a pidfd (``RUNTIME kill`` and ``delete --force`` cost an exec each,
and ``delete --force`` on a running container polls in 100 ms steps); a
stopped container is then removed with a plain ``RUNTIME delete``.

What a container is is kept in ``BUNDLE/runc.json`` for a restarted crio.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crio.config import Config, RuntimeHandler, configured_paths
from crio.errors import ConfigError, NotFoundError, OCIRuntimeError, WrongStateError
from crio.oci.runtime import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ExecResult,
    PodNamespaces,
    SandboxSpec,
    SandboxStats,
    State,
    StreamIO,
)
from crio_plugins.runtime_runc import (
    attach,
    cgstats,
    conmon,
    exec_session,
    garbage,
    pause,
    portforward,
)
from crio_plugins.runtime_runc._container import (
    STATE_FILE,
    RuncContainer,
    monitor_pid,
    runtime_pid,
    wait_gone,
)
from crio_plugins.runtime_runc._proc import alive, process_start, read_json, running
from crio_plugins.runtime_runc.cgroups import Hierarchies, v2_controllers
from crio_plugins.runtime_runc.control import RuncProcessControl
from crio_plugins.runtime_runc.inotify import DirectoryWatcher
from crio_plugins.runtime_runc.sandboxes import Sandboxes, usage_to_stats
from crio_plugins.runtime_runc.systemd import CONMON_SCOPE_PREFIX, SystemdManager, scope_name

__all__ = ["ConmonPaths", "RuncRuntime"]

log = logging.getLogger("crio.runtime.runc")

#: How long removal waits for conmon to end (and finish its exit file).
EXIT_FILE_GRACE = 10.0
#: Exit code reported when a container's exit was never recorded (as CRI-O does).
LOST_EXIT_CODE = 255
#: Exists while systemd runs as PID 1 (sd_booted(3)).
SYSTEMD_RUNNING = "/run/systemd/system"
#: CRI reason of a container whose exit was lost with its monitor.
LOST_REASON = "ContainerLost"


@dataclass(frozen=True, slots=True)
class ConmonPaths:
    """Where a container's conmon listens, for attach and resize."""

    attach_socket: Path
    ctl_fifo: Path
    winsz_fifo: Path
    log_path: str


def _conmon_log_level() -> str:
    level = logging.getLogger().getEffectiveLevel()
    if level <= logging.DEBUG:
        return "debug"
    return "info" if level <= logging.INFO else "warn" if level <= logging.WARNING else "error"


def _fd_budget() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(soft // 4, 0) if soft != resource.RLIM_INFINITY else 1 << 14


class RuncRuntime(RuncProcessControl):
    """One ``[crio.runtime.runtimes.NAME]`` handler with runtime_type "oci"."""

    #: start_sandbox only waits for the pod's pause process (started by create_sandbox):
    #: the namespaces CNI sets up are pinned by create_sandbox.
    sandbox_independent_of_network = True

    def __init__(
        self,
        handler_name: str,
        runtime_path: str,
        runtime_root: str,
        settings: conmon.ConmonSettings,
        namespaces_dir: str,
        bundle_root: str = "",
        reserved: frozenset[str] = frozenset(),
        stop_timeout: float = 30.0,
        pause_binary: str = "",
    ) -> None:
        self.handler_name = handler_name
        self.runtime_path = runtime_path
        self.runtime_root = runtime_root
        self.conmon = settings
        self.namespaces_dir = Path(namespaces_dir)
        #: crio's run root (bundles lie below it) and every configured path: the
        #: garbage collection's evidence of what crio made (see garbage.py).
        self.bundle_root = bundle_root
        self.reserved = reserved
        self._foreign: set[str] = set()
        #: Seconds a stop waits for the exit once it has sent SIGKILL.
        self.stop_timeout = stop_timeout
        self.hierarchies = Hierarchies({}, "")
        #: cgroup files kept open for stats: at most a quarter of the descriptors crio may open.
        self._cgroup_reader = cgstats.CgroupReader(_fd_budget())
        self._sampler: cgstats.Sampler[None] = cgstats.Sampler(
            self.hierarchies, self._cgroup_reader, processes=False
        )
        #: The systemd cgroup manager's D-Bus client (cgroup_manager = "systemd").
        self.systemd = SystemdManager() if settings.systemd_cgroup else None
        self.sandboxes = Sandboxes(
            self.namespaces_dir, self.hierarchies, self._cgroup_reader, self.systemd, stop_timeout
        )
        #: ``pause_binary``: the static binary that holds shared PID namespaces
        #: ("": catatonit from $PATH when there is one; "none": infra containers).
        self.pause_binary = pause_binary
        self.version = ""
        self._containers: dict[str, RuncContainer] = {}
        self._watcher: DirectoryWatcher | None = None
        self._layout_problem = ""

    @classmethod
    def from_config(cls, name: str, handler: RuntimeHandler, config: Config) -> RuncRuntime:
        options = dict(handler.options)
        pause_binary = options.pop("pause_binary", "")
        if options:
            raise ConfigError(
                "unknown key for runtime_type 'oci' (it takes pause_binary beyond the core keys)",
                key=f"crio.runtime.runtimes.{name}.{sorted(options)[0]}",
            )
        if not isinstance(pause_binary, str) or not (
            pause_binary in ("", "none") or pause_binary.startswith("/")
        ):
            raise ConfigError(
                f'got {pause_binary!r}, expected an absolute path, "" (catatonit from '
                '$PATH) or "none"',
                key=f"crio.runtime.runtimes.{name}.pause_binary",
            )
        if handler.runtime_config_path:
            raise ConfigError(
                "runtime_type 'oci' takes no configuration file (runc and crun read none)",
                key=f"crio.runtime.runtimes.{name}.runtime_config_path",
            )
        rt = config.crio.runtime
        path = handler.runtime_path or shutil.which(name) or name
        settings = conmon.ConmonSettings(
            conmon_path=handler.monitor_path or rt.conmon,
            runtime_path=path,
            runtime_root=handler.runtime_root or f"/run/crio/runtimes/{name}",
            exits_dir=rt.container_exits_dir,
            attach_dir=rt.container_attach_socket_dir,
            env=[*rt.conmon_env, *handler.monitor_env],
            log_level=_conmon_log_level(),
            log_size_max=rt.log_size_max,
            log_to_journald=rt.log_to_journald,
            no_pivot=rt.no_pivot,
            systemd_cgroup=rt.cgroup_manager == "systemd",
        )
        return cls(
            name,
            path,
            settings.runtime_root,
            settings,
            rt.namespaces_dir,
            bundle_root=config.crio.runroot,
            reserved=configured_paths(config),
            stop_timeout=float(rt.ctr_stop_timeout),
            pause_binary=pause_binary,
        )

    # -- life of the handler ------------------------------------------------

    def exclusive_paths(self) -> dict[str, str]:
        # The runtime root may be shared with podman (/run/runc), never with another crio.
        return {f"crio.runtime.runtimes.{self.handler_name}.runtime_root": self.runtime_root}

    def _missing(self) -> str:
        for what, path in (("runtime", self.runtime_path), ("conmon", self.conmon.conmon_path)):
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                return f"{what} {path} is not an executable file"
        return ""

    async def start(self) -> None:
        # A missing binary is reported through RuntimeReady rather than
        # refusing to start: the kubelet then shows the reason on the node.
        for directory in (
            self.runtime_root,
            self.conmon.exits_dir,
            self.conmon.attach_dir,
            self.namespaces_dir,
        ):
            os.makedirs(directory, exist_ok=True)
        hierarchies = await asyncio.to_thread(Hierarchies.from_host)
        self.hierarchies.v1, self.hierarchies.v2 = hierarchies.v1, hierarchies.v2
        self.hierarchies.unified_only = hierarchies.unified_only
        if not self._missing():
            rc, out, _ = await self._run("--version")
            self.version = out.splitlines()[0] if rc == 0 and out else ""
        self._layout_problem = self._check_layout()
        if self._layout_problem:
            log.error("runtime handler %s: %s", self.handler_name, self._layout_problem)
        self.sandboxes.pause_binary = await asyncio.to_thread(self._pause_binary)
        self._watcher = DirectoryWatcher(self.conmon.exits_dir, self._on_exit_file, self._rescan)
        self._watcher.start()

    def _pause_binary(self) -> str:
        return pause.choose_binary(
            self.pause_binary, f"crio.runtime.runtimes.{self.handler_name}.pause_binary"
        )

    def _check_layout(self) -> str:
        """crun refuses a hybrid cgroup layout whose v2 hierarchy holds controllers."""
        h = self.hierarchies
        if not self.version.startswith("crun") or h.unified_only or not h.v2:
            return ""
        held = v2_controllers(h)
        if held:
            return (
                f"{self.version} refuses this host's hybrid cgroup layout: the cgroup v2 "
                f"hierarchy {h.v2} holds the {', '.join(sorted(held))} controller(s); "
                "mount them as cgroup v1 (hack/prepare-host.sh does it for hugetlb)"
            )
        return ""

    async def close(self) -> None:
        await self.sandboxes.close()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        await asyncio.to_thread(self._cgroup_reader.close)

    def ready(self) -> tuple[bool, str, str]:
        missing = self._missing()
        if missing:
            return False, "RuntimeBinaryMissing", missing
        if self._layout_problem:
            return False, "CgroupLayoutUnsupported", self._layout_problem
        if self.systemd is not None and not os.path.isdir(SYSTEMD_RUNNING):
            return (
                False,
                "CgroupManagerUnavailable",
                (
                    "cgroup_manager is systemd, but systemd is not running as PID 1 on this "
                    f'node (no {SYSTEMD_RUNNING}): use cgroup_manager = "cgroupfs"'
                ),
            )
        return True, "", ""

    async def _run(self, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            self.runtime_path,
            f"--root={self.runtime_root}",
            *(["--systemd-cgroup"] if self.systemd is not None else []),
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin)
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    # -- pods ---------------------------------------------------------------

    async def create_sandbox(self, spec: SandboxSpec) -> PodNamespaces:
        return await self.sandboxes.create(spec)

    async def restore_sandbox(self, spec: SandboxSpec) -> PodNamespaces:
        return await self.sandboxes.restore(spec)

    async def start_sandbox(self, pod_sandbox_id: str, network: Mapping[str, Any]) -> None:
        await self.sandboxes.start(pod_sandbox_id)

    def sandbox_ended(self, pod_sandbox_id: str) -> str:
        return self.sandboxes.ended(pod_sandbox_id)

    async def stop_sandbox(self, pod_sandbox_id: str) -> None:
        ours = [c for c in self._containers.values() if c.pod_sandbox_id == pod_sandbox_id]
        await asyncio.gather(*(self.stop_container(c.container_id, 0) for c in ours))
        await self.sandboxes.stop(pod_sandbox_id)

    async def remove_sandbox(self, pod_sandbox_id: str) -> None:
        await self.stop_sandbox(pod_sandbox_id)
        await self.sandboxes.remove(pod_sandbox_id)

    async def sandbox_stats(self, pod_sandbox_id: str) -> SandboxStats:
        return await self.sandboxes.stats(pod_sandbox_id)

    # -- containers ---------------------------------------------------------

    def _get(self, container_id: str) -> RuncContainer:
        ctr = self._containers.get(container_id)
        if ctr is None:
            raise NotFoundError(
                f"container {container_id} is not known to runtime {self.handler_name}"
            )
        return ctr

    def conmon_paths(self, container_id: str) -> ConmonPaths:
        """The attach socket, ctl and winsz FIFOs and log of a container's conmon."""
        ctr = self._get(container_id)
        return ConmonPaths(
            attach_socket=Path(self.conmon.attach_dir) / container_id / "attach",
            ctl_fifo=ctr.bundle / "ctl",
            winsz_fifo=ctr.bundle / "winsz",
            log_path=ctr.log_path,
        )

    async def create_container(self, spec: ContainerSpec) -> None:
        oci = spec.oci_spec
        linux = oci.get("linux", {})
        own_pid_ns = any(
            ns.get("type") == "pid" and not ns.get("path") for ns in linux.get("namespaces", [])
        )
        ctr = RuncContainer(
            container_id=spec.container_id,
            pod_sandbox_id=spec.pod_sandbox_id,
            name=spec.name,
            bundle=spec.bundle,
            cgroups_path=str(linux.get("cgroupsPath", "")),
            own_pid_ns=own_pid_ns,
            stop_signal=spec.stop_signal,
            log_path=spec.log_path,
            process=dict(oci.get("process", {})),
        )
        payload = json.dumps(oci).encode()
        await asyncio.to_thread((spec.bundle / "config.json").write_bytes, payload)
        self._containers[spec.container_id] = ctr
        try:
            ctr.pid = await conmon.create_container(
                self.conmon,
                container_id=spec.container_id,
                name=spec.name,
                bundle=spec.bundle,
                log_path=spec.log_path,
                tty=spec.tty,
                stdin=spec.stdin,
                stdin_once=spec.stdin_once,
                place=self._conmon_scope(ctr) if self.systemd is not None else None,
            )
            ctr.pid_start = process_start(ctr.pid)
            await asyncio.to_thread(ctr.save)
        except BaseException:
            self._containers.pop(spec.container_id, None)
            await self._run("delete", "--force", spec.container_id)
            await asyncio.to_thread(self._forget_files, spec.container_id)
            raise

    def _conmon_scope(self, ctr: RuncContainer) -> Callable[[int], Awaitable[None]]:
        """Moves a conmon into ``crio-conmon-ID.scope`` in its pod's slice (systemd).

        Out of crio.service's cgroup, conmon outlives a stop or restart of crio
        whatever the unit's KillMode, as the containers do in their scopes.
        """
        pod_slice = ctr.cgroups_path.split(":", 1)[0] or "system.slice"
        systemd = self.systemd
        assert systemd is not None

        async def place(pid: int) -> None:
            await systemd.move_to_scope(
                scope_name(CONMON_SCOPE_PREFIX, ctr.container_id),
                pod_slice,
                pid,
                f"conmon of container {ctr.container_id}",
            )

        return place

    async def restore_container(self, spec: ContainerSpec) -> ContainerState:
        data = await asyncio.to_thread(read_json, spec.bundle / STATE_FILE) or {}
        config = await asyncio.to_thread(read_json, spec.bundle / "config.json") or {}
        linux = config.get("linux") or {}
        pid, pid_start = int(data.get("pid", 0)), int(data.get("pid_start", 0))
        if not pid:
            # Killed between conmon's start and our record of it: runc's pidfile knows.
            pid = await asyncio.to_thread(
                runtime_pid, spec.bundle, str(linux.get("cgroupsPath", ""))
            )
            pid_start = process_start(pid) if pid else 0
        ctr = RuncContainer(
            container_id=spec.container_id,
            pod_sandbox_id=spec.pod_sandbox_id,
            name=spec.name,
            bundle=spec.bundle,
            cgroups_path=str(data.get("cgroups_path", linux.get("cgroupsPath", ""))),
            own_pid_ns=bool(data.get("own_pid_ns", True)),
            stop_signal=int(data.get("stop_signal", spec.stop_signal)),
            log_path=str(data.get("log_path", spec.log_path)),
            process=dict(config.get("process", {})),
            pid=pid,
            pid_start=pid_start,
            started_at=int(data.get("started_at", 0)),
        )
        self._containers[spec.container_id] = ctr
        conmon_alive = self._conmon_alive(ctr)
        if not self._collect_exit(ctr) and not running(ctr.pid, ctr.pid_start):
            gone = "conmon and the container were" if not conmon_alive else "the container was"
            self._lost(ctr, f"{gone} gone when crio restarted, without an exit code")
        elif ctr.exit is None and not ctr.started_at and await self._runtime_says_running(ctr):
            # Started, but crio was killed before it noted that.
            ctr.started_at = time.time_ns()
            await asyncio.to_thread(ctr.save)
        if ctr.exit is None and not conmon_alive:
            log.warning(
                "container %s: conmon is gone; the container runs on without logs, and its "
                "exit will be recorded without an exit code",
                spec.container_id,
            )
            self._watch_without_conmon(ctr)
        return self._state(ctr)

    async def _runtime_says_running(self, ctr: RuncContainer) -> bool:
        rc, out, _ = await self._run("state", ctr.container_id)
        with contextlib.suppress(ValueError, AttributeError):
            return rc == 0 and json.loads(out).get("status") == "running"
        return False

    def _conmon_alive(self, ctr: RuncContainer) -> bool:
        return monitor_pid(ctr.bundle, ctr.container_id) > 0

    async def collect_garbage(
        self,
        sandbox_ids: Collection[str],
        container_ids: Collection[str],
        dry_run: bool = False,
    ) -> list[str]:
        paths = garbage.HandlerPaths(
            handler_name=self.handler_name,
            runtime_root=self.runtime_root,
            exits_dir=self.conmon.exits_dir,
            attach_dir=self.conmon.attach_dir,
            namespaces_dir=str(self.namespaces_dir),
            bundle_root=self.bundle_root,
            reserved=self.reserved,
        )
        return await garbage.collect(
            paths,
            self._runtime_state,
            self._delete_force,
            sandbox_ids,
            container_ids,
            dry_run,
            foreign=self._foreign,
        )

    async def _runtime_state(self, container_id: str) -> dict[str, Any] | None:
        """The runtime's OCI state of ``container_id`` (bundle, annotations), or None."""
        rc, out, _ = await self._run("state", container_id)
        with contextlib.suppress(ValueError):
            state = json.loads(out) if rc == 0 else None
            return state if isinstance(state, dict) else None
        return None

    async def _delete_force(self, container_id: str) -> str:
        rc, out, err = await self._run("delete", "--force", container_id)
        text = (err or out).strip()
        return "" if rc == 0 or "does not exist" in text else text

    async def start_container(self, container_id: str) -> None:
        ctr = self._get(container_id)
        # Noted before the call: the process may run and end before ``start`` returns,
        # and its finish time must not come before its start time.
        requested = time.time_ns()
        rc, out, err = await self._run("start", container_id)
        if rc != 0:
            raise OCIRuntimeError(
                f"container {container_id}: {self.handler_name} start failed: "
                f"{(err or out).strip() or f'exit status {rc}'}"
            )
        ctr.started_at = requested
        if ctr.exit is not None:  # its exit file came during the call
            ctr.exit = dataclasses.replace(
                ctr.exit, started_at=requested, finished_at=max(ctr.exit.finished_at, requested)
            )
        await asyncio.to_thread(ctr.save)

    def _signal(self, ctr: RuncContainer, signum: int, everything: bool) -> None:
        if everything and not ctr.own_pid_ns:
            for pid in self.hierarchies.pids(ctr.cgroups_path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        if not alive(ctr.pid, ctr.pid_start):
            return
        try:
            pidfd = os.pidfd_open(ctr.pid)
        except ProcessLookupError:
            return
        try:
            # The PID may have been reused between the check and the open.
            if process_start(ctr.pid) == ctr.pid_start:
                signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)

    async def stop_container(self, container_id: str, timeout: float) -> None:
        ctr = self._containers.get(container_id)
        if ctr is None or ctr.exit is not None:
            return
        if timeout > 0:
            self._signal(ctr, ctr.stop_signal, everything=False)
            await self._thaw(ctr)  # a paused container gets its signal once thawed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctr.exited.wait(), timeout)
                return
        self._signal(ctr, signal.SIGKILL, everything=True)
        await self._thaw(ctr)
        try:
            # ctr_stop_timeout, as CRI-O: how long the stop may wait for the exit now.
            await asyncio.wait_for(ctr.exited.wait(), self.stop_timeout)
        except TimeoutError:
            waited = f"{self.stop_timeout:g}s after SIGKILL (crio.runtime.ctr_stop_timeout)"
            if running(ctr.pid, ctr.pid_start):
                raise OCIRuntimeError(f"container {container_id}: still running {waited}") from None
            self._lost(ctr, f"conmon wrote no exit code {waited}; the process is gone", "Error")

    async def remove_container(self, container_id: str) -> None:
        ctr = self._containers.get(container_id)
        if ctr is not None and ctr.exit is None:
            await self.stop_container(container_id, 0)
        rc, out, err = await self._run("delete", container_id)
        text = (err or out).strip()
        if rc != 0 and "does not exist" not in text and "not found" not in text.lower():
            raise OCIRuntimeError(
                f"container {container_id}: {self.handler_name} delete failed: {text}"
            )
        if ctr is not None:
            # conmon may still be writing the exit file: let it finish before forgetting.
            await wait_gone(monitor_pid(ctr.bundle, container_id), EXIT_FILE_GRACE)
        self._containers.pop(container_id, None)
        await asyncio.to_thread(self._forget_files, container_id)

    def _forget_files(self, container_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.conmon.exits_dir, container_id))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.conmon.attach_dir, container_id))

    # -- exits --------------------------------------------------------------

    def _on_exit_file(self, name: str) -> None:
        ctr = self._containers.get(name)
        if ctr is not None and ctr.exit is None:
            self._collect_exit(ctr)

    def _rescan(self) -> None:
        for ctr in list(self._containers.values()):
            if ctr.exit is None:
                self._collect_exit(ctr)

    def _collect_exit(self, ctr: RuncContainer) -> bool:
        """Record the exit from conmon's exit file; False when there is none yet."""
        path = os.path.join(self.conmon.exits_dir, ctr.container_id)
        try:
            text = Path(path).read_text().strip()
            # A file's mtime comes from the kernel's coarse clock (a tick behind
            # time_ns()): never let it put the exit before the recorded start.
            finished = max(os.stat(path).st_mtime_ns, ctr.started_at)
        except FileNotFoundError:
            return False
        try:
            code = int(text)
        except ValueError:
            code = LOST_EXIT_CODE
        oom = (ctr.bundle / "oom").exists() or (
            code == 128 + signal.SIGKILL
            and self.hierarchies.usage(ctr.cgroups_path).oom_kill_count > 0
        )
        reason = "OOMKilled" if oom else "Completed" if code == 0 else "Error"
        self._exited(ctr, code, finished, reason, "")
        return True

    def _exited(
        self, ctr: RuncContainer, code: int, finished: int, reason: str, message: str
    ) -> None:
        ctr.exit = ContainerState(
            state=State.STOPPED,
            pid=ctr.pid,
            started_at=ctr.started_at,
            finished_at=finished,
            exit_code=code,
            reason=reason,
            message=message,
        )
        ctr.exited.set()

    def _lost(self, ctr: RuncContainer, message: str, reason: str = LOST_REASON) -> None:
        self._exited(ctr, LOST_EXIT_CODE, time.time_ns(), reason, message)

    def _watch_without_conmon(self, ctr: RuncContainer) -> None:
        """Notice the exit of a container whose conmon died, through a pidfd."""
        try:
            pidfd = os.pidfd_open(ctr.pid)
        except ProcessLookupError:
            self._lost(ctr, "conmon is gone and so is the container")
            return
        loop = asyncio.get_running_loop()

        def gone() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if ctr.exit is None:
                self._lost(ctr, "conmon was gone; the container's exit code is unknown")

        loop.add_reader(pidfd, gone)

    def _state(self, ctr: RuncContainer) -> ContainerState:
        if ctr.exit is not None:
            return ctr.exit
        state = State.RUNNING if ctr.started_at else State.CREATED
        paused = state is State.RUNNING and self.hierarchies.frozen(ctr.cgroups_path)
        return ContainerState(state=state, pid=ctr.pid, started_at=ctr.started_at, paused=paused)

    async def container_state(self, container_id: str) -> ContainerState:
        ctr = self._containers.get(container_id)
        if ctr is None:
            return ContainerState(
                state=State.UNKNOWN,
                reason="ContainerLost",
                message=f"runtime {self.handler_name} does not know container {container_id}",
            )
        return self._state(ctr)

    async def wait_container(self, container_id: str) -> ContainerState:
        ctr = self._get(container_id)
        await ctr.exited.wait()
        assert ctr.exit is not None
        return ctr.exit

    # -- inside running containers -------------------------------------------

    def _running(self, container_id: str) -> RuncContainer:
        ctr = self._get(container_id)
        if ctr.exit is not None or not ctr.started_at:
            # It ended (or never started) since core looked: the caller's timing, not ours.
            raise WrongStateError(f"container {container_id} is not running")
        return ctr

    async def exec_sync(
        self, container_id: str, command: Sequence[str], timeout: float
    ) -> ExecResult:
        ctr = self._running(container_id)
        process = {**ctr.process, "args": list(command), "terminal": False}
        code, stdout, stderr = await conmon.exec_sync(
            self.conmon,
            container_id=container_id,
            name=ctr.name,
            process=process,
            work_dir=ctr.bundle / f"exec-{secrets.token_hex(6)}",
            timeout=timeout,
        )
        return ExecResult(exit_code=code, stdout=stdout, stderr=stderr)

    async def exec(self, container_id: str, command: Sequence[str], io: StreamIO) -> int:
        ctr = self._running(container_id)
        return await exec_session.exec_in_container(
            self.runtime_path, self.runtime_root, container_id, command, io, process=ctr.process
        )

    async def attach(self, container_id: str, io: StreamIO) -> None:
        self._running(container_id)
        paths = self.conmon_paths(container_id)
        # conmon drops what is sent to a container created without stdin.
        await attach.attach_to_conmon(paths.attach_socket, paths.ctl_fifo, io)

    async def port_forward(self, pod_sandbox_id: str, port: int) -> tuple[Any, Any]:
        pod = self.sandboxes.get(pod_sandbox_id)
        if pod is None:
            raise NotFoundError(
                f"pod sandbox {pod_sandbox_id} is not known to runtime {self.handler_name}"
            )
        # A host-network pod has no network namespace of its own: connect from ours.
        return await portforward.connect_in_netns(pod.namespaces.network, port)

    async def update_resources(self, container_id: str, resources: Mapping[str, Any]) -> None:
        ctr = self._get(container_id)
        if ctr.exit is not None:
            raise OCIRuntimeError(f"container {container_id} has exited")
        path = ctr.bundle / f"resources-{secrets.token_hex(4)}.json"
        await asyncio.to_thread(path.write_text, json.dumps(dict(resources)))
        try:
            rc, out, err = await self._run("update", f"--resources={path}", container_id)
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if rc != 0:
            raise OCIRuntimeError(
                f"container {container_id}: {self.handler_name} update failed: "
                f"{(err or out).strip() or f'exit status {rc}'}"
            )

    async def reopen_log(self, container_id: str) -> None:
        ctr = self._running(container_id)
        ctl = ctr.bundle / "ctl"
        try:
            fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            reason = "conmon is not listening" if exc.errno == errno.ENXIO else exc.strerror
            raise OCIRuntimeError(
                f"container {container_id}: cannot reach conmon's {ctl}: {reason}"
            ) from None
        try:
            os.write(fd, b"2 0 0\n")
        finally:
            os.close(fd)
        deadline = time.monotonic() + 5.0
        while not os.path.exists(ctr.log_path):
            if time.monotonic() > deadline:
                raise OCIRuntimeError(
                    f"container {container_id}: conmon did not reopen {ctr.log_path}"
                )
            await asyncio.sleep(0.005)

    async def container_stats(self, container_id: str) -> ContainerStats:
        ctr = self._get(container_id)
        now = time.time_ns()
        if ctr.exit is not None:
            return ContainerStats(timestamp=now)
        usage = await asyncio.to_thread(self.hierarchies.usage, ctr.cgroups_path)
        return usage_to_stats(usage, now)

    async def list_container_stats(self, container_ids: Sequence[str]) -> dict[str, ContainerStats]:
        now = time.time_ns()
        running = {
            cid: ctr.cgroups_path
            for cid, ctr in self._containers.items()
            if ctr.exit is None and ctr.cgroups_path
        }
        wanted = {cid: running[cid] for cid in container_ids if cid in running}
        samples = await self._sampler.sample(wanted, running)
        return {
            cid: usage_to_stats(samples[cid][0], now) if cid in samples else ContainerStats(now)
            for cid in container_ids
            if cid in self._containers
        }

    async def list_sandbox_stats(self, pod_sandbox_ids: Sequence[str]) -> dict[str, SandboxStats]:
        pids: dict[str, list[int]] = {}
        for ctr in self._containers.values():
            if ctr.pid and ctr.exit is None:
                pids.setdefault(ctr.pod_sandbox_id, []).append(ctr.pid)
        return await self.sandboxes.list_stats(pod_sandbox_ids, pids)
