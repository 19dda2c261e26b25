"""The guest agent's process table: spawn, reap, pump output, feed stdin.

Every process the agent starts, and every orphan the kernel hands to PID 1,
is reaped here with ``waitpid(-1)``. An exit status whose pid nobody has
claimed yet (a container's init that died before its pid file was read) is
kept until it is claimed. Output goes out as ``output`` events, then one
``exit`` event per process once its output is delivered.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
import time
from collections.abc import Callable

import _wire
from _guest_loop import Failure, Loop, exit_code, read_keyed, set_nonblocking

# No typing at run time: the guest imports this module while it boots.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Proc", "Processes"]

READ_CHUNK = 64 * 1024
#: Stdin accepted for a process that has not read it yet.
MAX_STDIN_BUFFER = 8 << 20
#: How long an exit waits for output pipes that a background child keeps open.
EXIT_GRACE = 2.0

Emit = Callable[..., None]
Reply = Callable[..., None]


class Proc:
    """A container's init or an exec'd process, as the agent tracks it."""

    def __init__(self, key: dict[str, str]) -> None:
        self.key = key  # {"container_id": ...} or {"exec_id": ...}
        self.pid = 0
        self.status = "created"
        self.exit_code: int | None = None
        self.started_at = 0
        self.finished_at = 0
        self.stdin_fd: int | None = None
        self.tty_fd: int | None = None
        self.open_streams = 0
        self.waiters: list[int] = []
        self.cgroup = ""
        self.bundle = ""
        self.runtime = ""
        #: A container's OCI process (its execs start from it).
        self.process: dict[str, Any] = {}
        self.stdin_buffer = bytearray()
        self.stdin_close_pending = False
        self.exit_sent = False
        self.oom_killed = False

    def exit_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {"exit_code": self.exit_code, "finished_at": self.finished_at}
        if self.oom_killed:
            result["oom_killed"] = True
        return result


def fork_exec(
    argv: list[str],
    stdio: tuple[int, int, int],
    session: str = "",
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> int:
    """fork and exec by hand (what subprocess does, without importing it at boot).

    An exec failure comes back through a close-on-exec pipe and is raised here.
    """
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe-ish work, then exec or _exit
        try:
            os.close(err_r)
            if session:
                os.setsid()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            if session == "tty":
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            os.closerange(3, err_w)
            os.closerange(err_w + 1, 1 << 16)
            if cwd:
                os.chdir(cwd)
            os.execvpe(argv[0], argv, os.environ if env is None else env)
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(err_w, f"{getattr(exc, 'errno', 0) or 0}:{exc}".encode())
        finally:
            os._exit(127)
    os.close(err_w)
    try:
        report = b""
        while chunk := os.read(err_r, 4096):
            report += chunk
    finally:
        os.close(err_r)
    if report:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        number, _, message = report.decode(errors="replace").partition(":")
        raise OSError(int(number or 0), message)
    return pid


class Processes:
    """Children and orphans of the agent, and the plumbing of their stdio."""

    def __init__(self, loop: Loop, emit: Emit, reply: Reply, work: str) -> None:
        self.loop = loop
        self.emit = emit
        self.reply = reply
        self.work = work
        self.children: dict[int, Callable[[int], None]] = {}
        self.orphans: dict[int, int] = {}
        loop.on_signal = self.reap

    # -- spawning and reaping ---------------------------------------------------

    def spawn(
        self,
        argv: list[str],
        on_exit: Callable[[int], None],
        stdio: tuple[int, int, int],
        session: str = "",
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        """Start ``argv`` with ``stdio`` as fds 0-2; ``on_exit(code)`` once it is reaped.

        :param session: "" (stay in ours), "new" (setsid) or "tty" (setsid and
            make fd 0 the controlling terminal).
        :raises OSError: the program could not be executed (with its errno).
        """
        pid = fork_exec(argv, stdio, session, env, cwd)
        self.watch(pid, on_exit)
        return pid

    def watch(self, pid: int, on_exit: Callable[[int], None]) -> None:
        """Call ``on_exit(code)`` when ``pid`` is reaped (at once if it already was)."""
        if pid in self.orphans:
            on_exit(self.orphans.pop(pid))
        else:
            self.children[pid] = on_exit

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_code(status)
            callback = self.children.pop(pid, None)
            if callback is not None:
                callback(code)
                continue
            self.orphans[pid] = code
            if len(self.orphans) > 4096:
                self.orphans.pop(next(iter(self.orphans)))

    def run_tool(
        self,
        argv: list[str],
        done: Callable[[int, str], None],
        stdio: tuple[int, int, int] | None = None,
    ) -> None:
        """Run a short helper (the OCI runtime, ip) and call ``done(code, stderr)``.

        Its stderr is collected through a pipe unless ``stdio`` gives all three
        descriptors (then the tool's stdio is, say, a container's).
        """
        chunks: list[bytes] = []
        state: dict[str, Any] = {"code": None, "eof": stdio is not None}

        def finish() -> None:
            if state["code"] is not None and state["eof"]:
                done(state["code"], b"".join(chunks).decode(errors="replace"))

        def on_exit(code: int) -> None:
            state["code"] = code
            finish()

        if stdio is not None:
            self.spawn(argv, on_exit, stdio)
            return
        devnull = os.open(os.devnull, os.O_RDWR)
        err_r, err_w = os.pipe()
        set_nonblocking(err_r)

        def on_err() -> None:
            try:
                data = os.read(err_r, READ_CHUNK)
            except BlockingIOError:
                return
            if data:
                chunks.append(data)
                return
            self.loop.remove_reader(err_r)
            os.close(err_r)
            state["eof"] = True
            finish()

        try:
            self.spawn(argv, on_exit, (devnull, devnull, err_w))
        except OSError:
            os.close(err_r)
            raise
        finally:
            os.close(err_w)
            os.close(devnull)
        self.loop.add_reader(err_r, on_err)

    # -- output -----------------------------------------------------------------

    def pump(self, fd: int, proc: Proc, stream: str) -> None:
        """Send what ``fd`` yields as ``output`` events of ``proc`` until EOF."""
        set_nonblocking(fd)
        proc.open_streams += 1

        def on_data() -> None:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:  # EIO: the pty's last slave is closed
                data = b""
            if data:
                self.emit("output", **proc.key, stream=stream, data=_wire.encode_data(data))
                return
            self.loop.remove_reader(fd)
            if fd != proc.tty_fd:
                os.close(fd)
            self.emit("closed", **proc.key, stream=stream)
            proc.open_streams -= 1
            self.maybe_exited(proc)

        self.loop.add_reader(fd, on_data)

    def drain(self, fd: int, proc: Proc, stream: str) -> None:
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except OSError:
                return
            if not data:
                return
            self.emit("output", **proc.key, stream=stream, data=_wire.encode_data(data))

    def process_exited(self, proc: Proc, code: int) -> None:
        proc.status = "stopped"
        proc.exit_code = code
        proc.finished_at = time.time_ns()
        if proc.cgroup and code == 128 + 9:
            events = "/sys/fs/cgroup/" + proc.cgroup.strip("/") + "/memory.events"
            with contextlib.suppress(OSError, ValueError):
                proc.oom_killed = int(read_keyed(events).get("oom_kill", 0)) > 0
        if proc.tty_fd is not None:
            # A pty master gives EIO, not EOF, once the process is gone: read the rest now.
            self.drain(proc.tty_fd, proc, "stdout")
        self.maybe_exited(proc, force=proc.tty_fd is not None)

    def maybe_exited(self, proc: Proc, force: bool = False) -> None:
        """Send ``exit`` once the process is gone and its output delivered."""
        if proc.exit_code is None or proc.exit_sent:
            return
        if proc.open_streams > 0 and not force:
            self.loop.call_later(EXIT_GRACE, lambda: self.maybe_exited(proc, force=True))
            return
        proc.exit_sent = True
        self.emit("exit", **proc.key, **proc.exit_result())
        for rid in proc.waiters:
            self.reply(rid, proc.exit_result())
        proc.waiters.clear()

    def pipes(self, proc: Proc, stdin: bool) -> tuple[tuple[int, int, int], list[int]]:
        """Stdio for a process without a terminal, and the fds to close once it is spawned."""
        devnull = os.open(os.devnull, os.O_RDWR)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.pump(out_r, proc, "stdout")
        self.pump(err_r, proc, "stderr")
        in_fd = devnull
        close = [devnull, out_w, err_w]
        if stdin:
            in_r, in_w = os.pipe()
            set_nonblocking(in_w)
            proc.stdin_fd = in_w
            in_fd = in_r
            close.append(in_r)
        return (in_fd, out_w, err_w), close

    def console_socket(self, name: str, proc: Proc) -> str:
        """Listen for the pty master an OCI runtime sends over ``--console-socket``."""
        path = os.path.join(self.work, f"{name}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        import socket  # only terminals need it

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)

        def on_connect() -> None:
            conn, _ = listener.accept()
            self.loop.remove_reader(listener.fileno())
            listener.close()
            os.unlink(path)
            try:
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            finally:
                conn.close()
            if fds:
                proc.tty_fd = proc.stdin_fd = fds[0]
                self.pump(fds[0], proc, "stdout")

        self.loop.add_reader(listener.fileno(), on_connect)
        return path

    def close(self, proc: Proc) -> None:
        for fd in {proc.stdin_fd, proc.tty_fd} - {None}:
            assert fd is not None
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        proc.stdin_fd = proc.tty_fd = None

    # -- input ------------------------------------------------------------------

    def write_stdin(self, proc: Proc, data: bytes) -> None:
        if proc.stdin_fd is None:
            raise Failure("state", "the process has no open stdin")
        if len(proc.stdin_buffer) + len(data) > MAX_STDIN_BUFFER:
            raise Failure("state", "the process is not reading its stdin")
        proc.stdin_buffer += data
        self._feed(proc)

    def _feed(self, proc: Proc) -> None:
        fd = proc.stdin_fd
        if fd is None:
            return
        try:
            while proc.stdin_buffer:
                written = os.write(fd, proc.stdin_buffer[:READ_CHUNK])
                del proc.stdin_buffer[:written]
        except BlockingIOError:
            self.loop.add_writer(fd, lambda: self._feed(proc))
            return
        except OSError:  # the reader is gone
            proc.stdin_buffer.clear()
        self.loop.remove_writer(fd)
        if proc.stdin_close_pending:
            self._finish_stdin(proc)

    def close_stdin(self, proc: Proc) -> None:
        proc.stdin_close_pending = True
        if not proc.stdin_buffer:
            self._finish_stdin(proc)

    def _finish_stdin(self, proc: Proc) -> None:
        proc.stdin_close_pending = False
        if proc.stdin_fd is not None and proc.stdin_fd != proc.tty_fd:
            self.loop.remove_writer(proc.stdin_fd)
            os.close(proc.stdin_fd)
            proc.stdin_fd = None
        elif proc.tty_fd is not None:
            with contextlib.suppress(OSError):
                os.write(proc.tty_fd, b"\x04")  # end of input on a terminal

    def resize(self, proc: Proc, width: int, height: int) -> None:
        if proc.tty_fd is None:
            raise Failure("state", "the process has no terminal")
        fcntl.ioctl(proc.tty_fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
