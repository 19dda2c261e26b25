"""The guest agent's container and exec operations, through the OCI runtime.

Containers are made with ``RUNTIME create`` and ``start`` (runc or crun from
the host's root), with ``--pid-file`` so that the agent knows the init's pid;
the runtime exits and the init is re-parented to the agent, which reaps it.
``exec`` into a container uses ``RUNTIME exec --detach --pid-file`` for the
same reason; ``exec`` without a container runs the command in the guest.
Each ``op_*`` method returns a result, or None when it replies later.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import _wire
from _guest_loop import Failure, read_keyed, read_text
from _guest_procs import Proc, Processes
from _guest_spec import MissingDeviceError, exec_process, guest_devices, with_guest_devices

# No typing at run time: the guest imports this module while it boots.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DEFAULT_RUNTIME", "Containers", "guest_stats"]

DEFAULT_RUNTIME = "/usr/bin/crun"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def guest_stats() -> dict[str, Any]:
    """The whole guest: CPU time, memory in use, and each interface's counters."""
    fields = read_text("/proc/stat").splitlines()[0].split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # not idle, iowait
    meminfo = {k: int(v.split()[0]) * 1024 for k, v in read_keyed_colon("/proc/meminfo").items()}
    used = meminfo.get("MemTotal", 0) - meminfo.get("MemAvailable", 0)
    interfaces = []
    for line in read_text("/proc/net/dev").splitlines()[2:]:
        name, _, counters = line.partition(":")
        values = [int(v) for v in counters.split()]
        if name.strip() != "lo" and len(values) >= 11:
            interfaces.append(
                {
                    "name": name.strip(),
                    "rx_bytes": values[0],
                    "rx_errors": values[2],
                    "tx_bytes": values[8],
                    "tx_errors": values[10],
                }
            )
    return {
        "timestamp": time.time_ns(),
        "cpu_usage_ns": busy * 1_000_000_000 // ticks,
        "memory_usage_bytes": used,
        "memory_working_set_bytes": used,
        "memory_limit_bytes": meminfo.get("MemTotal", 0),
        "interfaces": interfaces,
    }


def read_keyed_colon(path: str) -> dict[str, str]:
    """``Key: value`` lines (/proc/meminfo) as a dict."""
    out = {}
    for line in read_text(path).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


class Containers:
    """Containers and exec'd processes by id."""

    def __init__(self, procs: Processes, oci_root: str) -> None:
        self.procs = procs
        self.oci_root = oci_root
        self.work = procs.work
        self.containers: dict[str, Proc] = {}
        self.execs: dict[str, Proc] = {}

    def target(self, args: dict[str, Any]) -> Proc:
        if "container_id" in args:
            return self.container(args["container_id"])
        proc = self.execs.get(args["exec_id"])
        if proc is None:
            raise Failure("not_found", f"no exec {args['exec_id']}")
        return proc

    def container(self, container_id: str) -> Proc:
        proc = self.containers.get(container_id)
        if proc is None:
            raise Failure("not_found", f"no container {container_id}")
        return proc

    def live(self) -> list[Proc]:
        return [p for p in (*self.containers.values(), *self.execs.values()) if p.pid]

    # -- the OCI runtime ----------------------------------------------------------

    def _log_file(self, name: str) -> str:
        return os.path.join(self.work, f"{name}.log")

    def oci(self, proc: Proc, *args: str, log_name: str = "") -> list[str]:
        log_file = self._log_file(log_name or proc.key["container_id"])
        return [
            proc.runtime,
            f"--root={self.oci_root}",
            f"--log={log_file}",
            "--log-format=json",
            *args,
        ]

    def oci_error(self, name: str, stderr: str) -> str:
        """The runtime's error messages from its JSON log ``name``, and its stderr."""
        messages = []
        with contextlib.suppress(OSError):
            for line in read_text(self._log_file(name)).splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal"):
                    messages.append(str(entry.get("msg", "")))
        return "; ".join(m for m in [*messages, stderr.strip()] if m) or "no message"

    def _stdio(
        self, proc: Proc, name: str, tty: bool, stdin: bool
    ) -> tuple[Any, list[int], list[str]]:
        """(stdio, fds to close after spawning, extra runtime flags)."""
        if tty:
            devnull = os.open(os.devnull, os.O_RDWR)
            socket_path = self.procs.console_socket(name, proc)
            return (devnull, devnull, devnull), [devnull], [f"--console-socket={socket_path}"]
        stdio, close = self.procs.pipes(proc, stdin)
        return stdio, close, []

    def _run(self, argv: list[str], done: Any, stdio: Any, close: list[int]) -> None:
        try:
            self.procs.run_tool(argv, done, stdio)
        finally:
            for fd in close:
                os.close(fd)

    # -- containers ---------------------------------------------------------------

    def op_create(self, rid: int, args: dict[str, Any]) -> None:
        cid = args["container_id"]
        if cid in self.containers:
            raise Failure("exists", f"container {cid} already exists")
        proc = Proc({"container_id": cid})
        proc.bundle = args["bundle"]
        proc.runtime = args.get("runtime", DEFAULT_RUNTIME)
        config = os.path.join(proc.bundle, "config.json")
        try:
            spec = json.loads(read_text(config))
        except (OSError, ValueError) as exc:
            raise Failure("invalid", f"container {cid}: bundle config.json: {exc}") from exc
        if args.get("guest_devices") or spec.get("linux", {}).get("devices"):
            self._fit_devices(cid, spec, config, bool(args.get("guest_devices")))
        proc.cgroup = spec.get("linux", {}).get("cgroupsPath", "")
        # Every exec runs as the container's process does (user, groups, capabilities ...).
        proc.process = spec.get("process") or {}
        pid_file = os.path.join(self.work, f"{cid}.pid")
        tty = bool(args.get("tty"))
        stdio, close, flags = self._stdio(proc, cid, tty, bool(args.get("stdin")))
        argv = self.oci(proc, "create", f"--bundle={proc.bundle}", f"--pid-file={pid_file}")
        argv += [*flags, cid]
        self.containers[cid] = proc

        def created(code: int, stderr: str) -> None:
            if code != 0:
                self.containers.pop(cid, None)
                self.procs.close(proc)
                message = f"create {cid}: {self.oci_error(cid, stderr)}"
                self.procs.reply(rid, error=_wire.Fault("failed", message))
                return
            proc.pid = int(read_text(pid_file).strip())
            self.procs.watch(proc.pid, lambda code: self.procs.process_exited(proc, code))
            self.procs.reply(rid, {"pid": proc.pid})

        self._run(argv, created, stdio, close)

    def _fit_devices(self, cid: str, spec: dict[str, Any], config: str, every: bool) -> None:
        """Give the container the guest's device nodes (see ``_guest_spec``)."""
        try:
            with_guest_devices(spec, every, guest_devices())
        except MissingDeviceError as exc:
            raise Failure("invalid", f"container {cid}: linux.devices: {exc}") from None
        with open(config, "w") as handle:
            json.dump(spec, handle)

    def op_start(self, rid: int, args: dict[str, Any]) -> None:
        cid = args["container_id"]
        proc = self.container(cid)
        if proc.status != "created":
            raise Failure("state", f"container {cid} is {proc.status}")

        def started(code: int, stderr: str) -> None:
            if code != 0:
                message = f"start {cid}: {self.oci_error(cid, stderr)}"
                self.procs.reply(rid, error=_wire.Fault("failed", message))
                return
            if proc.status == "created":
                proc.status = "running"
            proc.started_at = time.time_ns()
            self.procs.reply(rid, {"started_at": proc.started_at})

        self.procs.run_tool(self.oci(proc, "start", cid), started)

    def op_state(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        proc = self.container(args["container_id"])
        return {
            "status": proc.status,
            "pid": proc.pid,
            "exit_code": proc.exit_code,
            "started_at": proc.started_at,
            "finished_at": proc.finished_at,
        }

    def op_kill(self, rid: int, args: dict[str, Any]) -> dict[str, Any] | None:
        proc = self.target(args)
        sig = args.get("signal", int(signal.SIGKILL))
        if proc.exit_code is not None or not proc.pid:
            return {}
        if args.get("all") and "container_id" in args:
            cid = args["container_id"]

            def killed(code: int, stderr: str) -> None:
                if code != 0 and proc.exit_code is None:
                    message = f"kill {cid}: {self.oci_error(cid, stderr)}"
                    self.procs.reply(rid, error=_wire.Fault("failed", message))
                else:
                    self.procs.reply(rid, {})

            self.procs.run_tool(self.oci(proc, "kill", "--all", cid, str(sig)), killed)
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        return {}

    def op_wait(self, rid: int, args: dict[str, Any]) -> dict[str, Any] | None:
        proc = self.target(args)
        if proc.exit_sent:
            return proc.exit_result()
        proc.waiters.append(rid)
        return None

    def op_delete(self, rid: int, args: dict[str, Any]) -> dict[str, Any] | None:
        cid = args["container_id"]
        proc = self.containers.get(cid)
        if proc is None:
            return {}
        force = bool(args.get("force"))
        if proc.exit_code is None and proc.status != "created" and not force:
            raise Failure("state", f"container {cid} is still running")

        def deleted(code: int, stderr: str) -> None:
            if code != 0:
                message = f"delete {cid}: {self.oci_error(cid, stderr)}"
                self.procs.reply(rid, error=_wire.Fault("failed", message))
                return
            self.containers.pop(cid, None)
            self.procs.close(proc)
            for name in (f"{cid}.pid", f"{cid}.log"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.work, name))
            self.procs.reply(rid, {})

        argv = self.oci(proc, "delete", *(["--force"] if force else []), cid)
        self.procs.run_tool(argv, deleted)
        return None

    def op_stats(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        """A container's cgroup, or without ``container_id`` the whole guest."""
        if "container_id" not in args:
            return {**guest_stats(), "process_count": self._pod_processes()}
        cid = args["container_id"]
        proc = self.container(cid)
        base = "/sys/fs/cgroup/" + proc.cgroup.strip("/")
        try:
            cpu = read_keyed(os.path.join(base, "cpu.stat"))
            usage = int(read_text(os.path.join(base, "memory.current")))
            memory = read_keyed(os.path.join(base, "memory.stat"))
            events = read_keyed(os.path.join(base, "memory.events"))
            pids = int(read_text(os.path.join(base, "pids.current")) or 0)
        except (OSError, ValueError) as exc:
            raise Failure("failed", f"stats of {cid} from {base}: {exc}") from exc
        limit = read_text(os.path.join(base, "memory.max")).strip()
        return {
            "timestamp": time.time_ns(),
            "cpu_usage_ns": int(cpu.get("usage_usec", 0)) * 1000,
            "memory_usage_bytes": usage,
            "memory_working_set_bytes": max(0, usage - int(memory.get("inactive_file", 0))),
            "memory_rss_bytes": int(memory.get("anon", 0)),
            "memory_limit_bytes": int(limit) if limit.isdigit() else 0,
            "page_faults": int(memory.get("pgfault", 0)),
            "major_page_faults": int(memory.get("pgmajfault", 0)),
            "oom_kill_count": int(events.get("oom_kill", 0)),
            "process_count": pids,
        }

    def _pod_processes(self) -> int:
        """Processes in the containers' cgroups: what a runc pod counts in its cgroup
        (not the agent, nor the guest kernel's threads)."""
        total = 0
        for cgroup in {p.cgroup for p in self.containers.values() if p.cgroup}:
            with contextlib.suppress(OSError, ValueError):
                total += int(read_text(f"/sys/fs/cgroup/{cgroup.strip('/')}/pids.current"))
        return total

    def op_update(self, rid: int, args: dict[str, Any]) -> None:
        cid = args["container_id"]
        proc = self.container(cid)
        if proc.exit_code is not None:
            raise Failure("state", f"container {cid} has exited")
        path = os.path.join(self.work, f"{cid}-resources.json")
        with open(path, "w") as handle:
            json.dump(args["resources"], handle)

        def updated(code: int, stderr: str) -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if code != 0:
                message = f"update {cid}: {self.oci_error(cid, stderr)}"
                self.procs.reply(rid, error=_wire.Fault("failed", message))
            else:
                self.procs.reply(rid, {})

        self.procs.run_tool(self.oci(proc, "update", f"--resources={path}", cid), updated)

    # -- exec -----------------------------------------------------------------------

    def op_exec(self, rid: int, args: dict[str, Any]) -> dict[str, Any] | None:
        eid = args["exec_id"]
        if eid in self.execs:
            raise Failure("exists", f"exec {eid} already exists")
        proc = Proc({"exec_id": eid})
        if "container_id" not in args:
            self.execs[eid] = proc
            try:
                return self._exec_in_guest(proc, args)
            except BaseException:
                self.execs.pop(eid, None)
                raise
        owner = self.container(args["container_id"])
        if owner.status != "running" or owner.exit_code is not None:
            raise Failure("state", f"container {args['container_id']} is not running")
        proc.runtime = owner.runtime
        self.execs[eid] = proc
        self._exec_in_container(rid, proc, args, owner.process)
        return None

    def _exec_in_container(
        self, rid: int, proc: Proc, args: dict[str, Any], base: dict[str, Any]
    ) -> None:
        eid, cid = args["exec_id"], args["container_id"]
        pid_file = os.path.join(self.work, f"exec-{eid}.pid")
        process_file = os.path.join(self.work, f"exec-{eid}.json")
        tty = bool(args.get("tty"))
        with open(process_file, "w") as handle:
            json.dump(exec_process(base, args["argv"], tty, args.get("env", []), args.get("cwd")),
                      handle)  # fmt: skip
        stdio, close, flags = self._stdio(proc, f"exec-{eid}", tty, bool(args.get("stdin")))
        log_name = f"exec-{eid}"
        argv = self.oci(proc, "exec", "--detach", f"--pid-file={pid_file}", log_name=log_name)
        argv += [f"--process={process_file}", *flags, cid]

        def started(code: int, stderr: str) -> None:
            error = self.oci_error(log_name, stderr) if code != 0 else ""
            for name in (self._log_file(log_name), process_file):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
            if code != 0:
                self.execs.pop(eid, None)
                self.procs.close(proc)
                message = f"exec in {cid}: {error}"
                self.procs.reply(rid, error=_wire.Fault("failed", message))
                return
            proc.pid = int(read_text(pid_file).strip())
            os.unlink(pid_file)
            proc.status = "running"
            self.procs.watch(proc.pid, lambda code: self.procs.process_exited(proc, code))
            self.procs.reply(rid, {"pid": proc.pid})

        # With a terminal the runtime's stdio is unused: collect its stderr.
        self._run(argv, started, None if tty else stdio, close)

    def _exec_in_guest(self, proc: Proc, args: dict[str, Any]) -> dict[str, Any]:
        env = dict(item.split("=", 1) for item in args.get("env", []) if "=" in item)
        env.setdefault("PATH", GUEST_PATH)
        cwd = args.get("cwd") or "/"

        def on_exit(code: int) -> None:
            self.procs.process_exited(proc, code)

        if args.get("tty"):
            master, slave = os.openpty()
            proc.tty_fd = proc.stdin_fd = master

            stdio, close, session = (slave, slave, slave), [slave], "tty"
        else:
            stdio, close = self.procs.pipes(proc, bool(args.get("stdin")))
            session = "new"
        try:
            proc.pid = self.procs.spawn(args["argv"], on_exit, stdio, session, env, cwd)
        except OSError as exc:
            self.procs.close(proc)
            raise Failure("failed", f"exec {args['argv'][0]}: {exc}") from exc
        finally:
            for fd in close:
                os.close(fd)
        if proc.tty_fd is not None:
            self.procs.pump(proc.tty_fd, proc, "stdout")
        proc.status = "running"
        return {"pid": proc.pid}

    # -- stdin and terminals ------------------------------------------------------

    def op_stdin(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        proc = self.target(args)
        try:
            data = _wire.decode_data(args["data"])
        except ValueError as exc:
            raise Failure("invalid", f"stdin: {exc}") from exc
        self.procs.write_stdin(proc, data)
        return {}

    def op_close_stdin(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        self.procs.close_stdin(self.target(args))
        return {}

    def op_resize(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        self.procs.resize(self.target(args), args["width"], args["height"])
        return {}
