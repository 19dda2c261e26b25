"""The pod VM's agent: PID 1 in the guest, speaking ``_wire`` over a virtio serial port.

Standard library only. It runs on the host's python3 (the guest's root is the
host's, shared read-only over virtiofs) and imports its sibling modules
(``_wire``, ``_guest_loop``, ``_guest_procs``, ``_guest_oci``, ``_guest_net``) from its own
directory, which the host copies into the pod's share before boot. It sends
``ready`` once, then answers every request by id; as PID 1 it reaps every
process in the guest (see ``_guest_procs``).

If the host closes the port (crio restarting), the agent keeps its
containers, buffers what it would have sent (up to :data:`MAX_BACKLOG`) and
serves the next connection.
"""

from __future__ import annotations

import os
import sys

# When python began to run the agent, for the ready event: the rest of boot
# is imports, which cost seconds under TCG (so they are kept few).
with open("/proc/uptime") as _uptime:
    _STARTED_AT = float(_uptime.read().split()[0])

import collections
import contextlib
import errno
import fcntl
import json
import signal

# No typing at run time: the guest imports this module while it boots.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _guest_rtnl  # noqa: E402
import _wire  # noqa: E402
from _guest_loop import Failure, Loop, log, read_text, set_blocking, set_nonblocking  # noqa: E402
from _guest_net import Connections  # noqa: E402
from _guest_oci import Containers  # noqa: E402
from _guest_procs import Processes  # noqa: E402
from _guest_restore import Restore  # noqa: E402

PORT_NAME = "crio.agent"
#: The agent's state in the guest: OCI runtime root, pid files, console sockets.
STATE_DIR = "/run/vm"
READ_CHUNK = 64 * 1024
#: Output kept while no host is connected; older lines are dropped beyond it.
MAX_BACKLOG = 32 << 20
#: Events kept for a host that reconnects and resumes (bytes of encoded lines).
REPLAY_BYTES = 16 << 20
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC
SYS_FINIT_MODULE = 313  # x86_64
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 2, 4, 8, 32


class Agent:
    """The serial port, the dispatcher and the guest-wide operations."""

    def __init__(
        self,
        port_fd: int,
        state_dir: str = STATE_DIR,
        exit_on_eof: bool = False,
        template: bool = False,
    ) -> None:
        oci_root, work = os.path.join(state_dir, "oci"), os.path.join(state_dir, "agent")
        self.state_dirs = (oci_root, work)
        self.make_state_dirs()
        self.loop = Loop()
        self.port_fd = port_fd
        self.exit_on_eof = exit_on_eof
        self.conn = _wire.Connection(_wire.Role.GUEST)
        self.out = bytearray()
        self.flush_scheduled = False
        self.seq = 0
        #: Data came from the current host (an EOF before that is no disconnection).
        self.host_seen = False
        #: Events wait in the ring until a reconnected host resumes.
        self.paused = False
        self.replay: collections.deque[tuple[int, bytes]] = collections.deque()
        self.replay_bytes = 0
        self.procs = Processes(self.loop, self.event, self.reply, work)
        self.containers = Containers(self.procs, oci_root)
        self.connections = Connections(self.loop, self.event)
        self.restore = Restore(template, self.make_state_dirs)
        self.template = template
        #: No host on the port: its reader waits for the SIGIO of the next connection.
        self.waiting_for_host = False
        reap = self.loop.on_signal
        self.loop.on_signal = lambda: (reap(), self.host_came())

    def make_state_dirs(self) -> None:
        """The agent's directories (again after a restored VM moved into the host root)."""
        for path in self.state_dirs:
            os.makedirs(path, exist_ok=True)

    # -- the serial port ------------------------------------------------------------

    def on_port(self) -> None:
        try:
            data = os.read(self.port_fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log(f"port read failed: {exc}")
            data = b""
        if not data and self.exit_on_eof:
            raise SystemExit(0)
        if not data:
            self.loop.remove_reader(self.port_fd)
            if self.host_seen:
                # The host closed its end. Requests in flight die with that
                # connection (their replies would confuse the next one); events
                # are kept in the replay ring and wait, in order, for the next
                # host's ``resume``.
                self.host_seen = False
                self.paused = True
                self.conn = _wire.Connection(_wire.Role.GUEST)
                self.out.clear()
            # Read again when a host connects (virtio-console sends SIGIO then), or
            # in a second in case that signal is missed.
            self.waiting_for_host = True
            self.loop.call_later(1.0, self.host_came)
            return
        self.host_seen = True
        self.conn.receive_data(data)
        while True:
            try:
                message = self.conn.next_event()
            except _wire.RemoteProtocolError as exc:
                log(f"the host broke the protocol ({exc}); waiting for a new connection")
                self.conn = _wire.Connection(_wire.Role.GUEST)
                return
            if message is _wire.NEED_DATA:
                return
            if isinstance(message, _wire.BadRequest):
                self.reply(message.id, error=_wire.Fault("invalid", message.message))
            else:
                self.dispatch(message)

    def host_came(self) -> None:
        if self.waiting_for_host:
            self.waiting_for_host = False
            self.loop.add_reader(self.port_fd, self.on_port)

    def write(self, line: bytes) -> None:
        self.out += line
        if len(self.out) > MAX_BACKLOG:
            cut = self.out.find(b"\n", len(self.out) - MAX_BACKLOG)
            del self.out[: cut + 1]
        self.flush()

    def flush(self) -> None:
        self.flush_scheduled = False
        while self.out:
            try:
                written = os.write(self.port_fd, self.out[:READ_CHUNK])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ENODEV):
                    raise
                break  # no host on the other end yet
            del self.out[:written]
        if self.out and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_later(0.01, self.flush)

    def reply(
        self,
        rid: int,
        result: dict[str, Any] | None = None,
        error: _wire.Fault | None = None,
    ) -> None:
        if result is None and error is None:
            result = {}
        try:
            self.write(self.conn.send(_wire.Reply(rid, result=result, error=error)))
        except _wire.LocalProtocolError as exc:  # the request came on an old connection
            log(f"dropping reply {rid}: {exc}")

    def event(self, name: str, **data: Any) -> None:
        self.seq += 1
        line = self.conn.send(_wire.Event(name, data, self.seq))
        self.replay.append((self.seq, line))
        self.replay_bytes += len(line)
        while self.replay_bytes > REPLAY_BYTES:
            self.replay_bytes -= len(self.replay.popleft()[1])
        if not self.paused:
            self.write(line)

    def op_resume(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        """Send the kept events after ``after``, in order, then the reply; go live again."""
        after = args["after"]
        oldest = self.replay[0][0] if self.replay else self.seq + 1
        again = [line for seq, line in self.replay if seq > after]
        for line in again:
            self.write(line)
        self.paused = False
        return {"replayed": len(again), "complete": oldest <= after + 1, "last": self.seq}

    def dispatch(self, request: _wire.Request) -> None:
        name = f"op_{request.op}"
        handler = (
            getattr(self, name, None)
            or getattr(self.connections, name, None)
            or getattr(self.restore, name, None)
            or getattr(self.containers, name)
        )
        try:
            result = handler(request.id, request.args)
        except Failure as exc:
            self.reply(request.id, error=_wire.Fault(exc.kind, str(exc)))
        except OSError as exc:
            self.reply(request.id, error=_wire.Fault("failed", f"{request.op}: {exc}"))
        else:
            if result is not None:
                self.reply(request.id, result)

    # -- the guest --------------------------------------------------------------------

    def op_ping(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        return {"version": _wire.PROTOCOL_VERSION, "kernel": os.uname().release}

    def op_network(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        by_mac = {}
        for name in os.listdir("/sys/class/net"):
            by_mac[read_text(f"/sys/class/net/{name}/address").strip().lower()] = name
        changes = [_guest_rtnl.set_link(_guest_rtnl.interface_index("lo"), "lo")]
        for iface in args["interfaces"]:
            dev = by_mac.get(str(iface.get("mac", "")).lower())
            if dev is None:
                raise Failure("not_found", f"no guest interface with MAC {iface.get('mac')}")
            index = _guest_rtnl.interface_index(dev)
            changes.append(_guest_rtnl.set_link(index, dev, mtu=int(iface.get("mtu") or 0)))
            changes += [_guest_rtnl.add_address(index, dev, a) for a in iface.get("addresses", [])]
        try:
            changes += [
                _guest_rtnl.add_route(str(r["dst"]), str(r.get("gw") or ""))
                for r in args.get("routes", [])
            ]
        except ValueError as exc:
            raise Failure("invalid", f"network: {exc}") from None
        if args.get("hostname"):
            with open("/proc/sys/kernel/hostname", "w") as handle:
                handle.write(args["hostname"])
        try:
            _guest_rtnl.apply(changes)
        except OSError as exc:
            raise Failure("failed", str(exc.strerror)) from None
        return {}

    def op_modprobe(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        directory = args["modules_dir"]
        try:
            index = json.loads(read_text(os.path.join(directory, "modules.json")))
        except (OSError, ValueError) as exc:
            raise Failure("not_found", f"modprobe: {directory}/modules.json: {exc}") from exc
        release = os.uname().release
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        loaded: list[str] = []

        def load(name: str, chain: tuple[str, ...]) -> None:
            name = name.replace("-", "_")
            if os.path.isdir(f"/sys/module/{name}") or name in loaded:
                return
            if name in chain or name not in index:
                raise Failure("not_found", f"modprobe: no module {name} for {release}")
            for dep in index[name]["depends"]:
                load(dep, (*chain, name))
            fd = os.open(os.path.join(directory, release, index[name]["path"]), os.O_RDONLY)
            try:
                if libc.syscall(SYS_FINIT_MODULE, fd, b"", 0) != 0:
                    err = ctypes.get_errno()
                    if err != errno.EEXIST:
                        raise Failure("failed", f"modprobe {name}: {os.strerror(err)}")
            finally:
                os.close(fd)
            loaded.append(name)

        for name in args["names"]:
            load(str(name), ())
        return {"loaded": loaded}

    def op_shm(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        """Make the guest's /dev/shm (the pod's) what a runc pod gets: a bounded tmpfs."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        flags = MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC
        data = f"mode=1777,size={int(args['size'])}".encode()
        if libc.mount(b"shm", b"/dev/shm", b"tmpfs", ctypes.c_ulong(flags), data) != 0:
            raise Failure("failed", f"remount /dev/shm: {os.strerror(ctypes.get_errno())}")
        return {}

    def op_sysctl(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        for key, value in args["values"].items():
            parts = str(key).replace(".", "/").split("/")
            if not key or any(p in ("", "..") for p in parts):
                raise Failure("invalid", f"sysctl {key!r} is not a sysctl name")
            try:
                with open("/proc/sys/" + "/".join(parts), "w") as handle:
                    handle.write(str(value))
            except FileNotFoundError:
                raise Failure("not_found", f"sysctl {key}: no such sysctl in the guest") from None
            except OSError as exc:
                raise Failure("failed", f"sysctl {key}={value}: {exc.strerror}") from None
        return {}

    def op_shutdown(self, rid: int, args: dict[str, Any]) -> None:
        for proc in self.containers.live():
            if proc.exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        os.sync()
        self.reply(rid, {})
        # Let the reply leave before the power goes.
        set_blocking(self.port_fd)
        self.flush()
        power_off()

    def run(self) -> None:
        set_nonblocking(self.port_fd)
        # SIGIO tells of a host connecting to the port (see on_port); its
        # handler only wakes the loop (set_wakeup_fd).
        signal.signal(signal.SIGIO, lambda *_: None)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.port_fd, fcntl.F_SETOWN, os.getpid())
            flags = fcntl.fcntl(self.port_fd, fcntl.F_GETFL)
            fcntl.fcntl(self.port_fd, fcntl.F_SETFL, flags | os.O_ASYNC)
        self.loop.add_reader(self.port_fd, self.on_port)
        self.event(
            "ready",
            template=self.template,
            kernel=os.uname().release,
            pid=os.getpid(),
            uptime=float(read_text("/proc/uptime").split()[0]),
            python_started=_STARTED_AT,
            version=_wire.PROTOCOL_VERSION,
        )
        while True:
            self.loop.run_once()


def power_off() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.sync()
    libc.reboot(LINUX_REBOOT_CMD_POWER_OFF)
    os._exit(1)  # reboot() failed: PID 1 exiting panics the kernel, which also stops the VM


def find_port(name: str = PORT_NAME) -> str:
    base = "/sys/class/virtio-ports"
    for port in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        with contextlib.suppress(OSError):
            if read_text(f"{base}/{port}/name").strip() == name:
                return f"/dev/{port}"
    raise SystemExit(f"crio-agent: no virtio serial port named {name}")


def main(argv: list[str]) -> None:
    """``agent.py`` in the VM; ``agent.py --port-fd N --state-dir D`` elsewhere (tests).

    ``--mode template``: the agent of a template VM, on the initramfs's python.
    """
    options = {"--port-fd": "", "--state-dir": STATE_DIR, "--mode": "boot"}
    rest = list(argv)
    while rest:
        flag = rest.pop(0)
        if flag not in options or not rest:
            raise SystemExit(
                f"usage: agent.py [--port-fd N] [--state-dir DIR] [--mode boot|template] "
                f"(not {flag!r})"
            )
        options[flag] = rest.pop(0)
    if os.getpid() != 1:
        log("not PID 1: only the agent's own children are reaped here")
    if options["--port-fd"]:
        port_fd = int(options["--port-fd"])
    else:
        port_fd = os.open(find_port(), os.O_RDWR | os.O_CLOEXEC)
    if options["--mode"] not in ("boot", "template"):
        raise SystemExit(f"agent.py: --mode is boot or template, not {options['--mode']!r}")
    template = options["--mode"] == "template"
    if template:
        # What the agent imports lazily is imported now, while the template is
        # made: a restored VM finds it in memory.
        import ctypes  # noqa: F401
        import socket  # noqa: F401
    agent = Agent(
        port_fd, options["--state-dir"], exit_on_eof=bool(options["--port-fd"]), template=template
    )
    agent.run()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        if os.getpid() == 1:
            log(f"fatal: {exc}")
            power_off()
        raise
    except BaseException as exc:
        log(f"fatal: {type(exc).__name__}: {exc}")
        if os.getpid() == 1:  # PID 1 must not just return
            power_off()
        raise
