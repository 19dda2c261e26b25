"""A pod's shared PID namespace held by a pause process crio starts itself: no runc, no conmon.

Pods whose containers share one PID namespace (the kubelet's
shareProcessNamespace) need a process to be that namespace's init. An infra
container costs conmon, ``runc create`` and ``runc start`` (about 60 ms here);
this costs a few milliseconds. crio starts a static pause binary (Debian's
catatonit, in its ``-P`` pause mode) in two throwaway threads:

1. :func:`_spawn` joins the pod's pinned network, IPC and UTS namespaces and
   unshares its filesystem attributes, a mount namespace and the PID
   namespace of its children. In that mount namespace (made private, so
   nothing propagates to the host's) it mounts an empty tmpfs over the pod's
   run directory, binds the binary on ``/pause`` in it and pivots into it:
   the host's filesystem is detached from the namespace. It then drops every
   capability from its bounding and ambient sets, becomes uid and gid 65535
   with no supplementary groups, sets no_new_privs and installs a seccomp
   filter (_seccomp.py; all for this thread only: raw system calls), and
   posix_spawns ``/pause -P`` with an empty
   environment, stdio closed, every descriptor crio may have without
   close-on-exec closed, all signals at their defaults, in a session of its
   own. The process is PID 1 of a new PID namespace, and has no capability.
2. :func:`_finish` puts it into the pod's cgroup (``POD_CGROUP/crio-POD_ID``),
   pins its PID namespace on ``NAMESPACES_DIR/pidns/POD_ID`` (the path the
   pod's containers join; a namespace whose init died refuses new
   processes, so the path never leads anywhere else), enters its mount
   namespace, unmounts and removes ``/pause`` and remounts the tmpfs
   read-only.

A container sharing the namespace sees, as ``/proc/1``: an empty read-only
root and cwd, an empty environment, no capabilities, a seccomp filter, one
descriptor (its signalfd), and a uid and gid its own processes rarely have (ptrace and most of
``/proc/1`` are closed to other uids without CAP_SYS_PTRACE).

Positive evidence that a process is a pause process this crio made (for a
restart, a rolled-back RunPodSandbox and the garbage collection): its root
is a tmpfs whose source names ``crio-pause:`` and its pin path (inside this
crio's namespaces directory, named by a pod id), it is the init of a PID
namespace of its own, and it lives in crio's user namespace (only a process
with CAP_SYS_ADMIN there can mount such a tmpfs). The pin file is made
before the process, so a crash between the two leaves both, to be found.

crio is the process's parent until crio exits (posix_spawn cannot detach
it): it reaps it when it ends; after a restart its new parent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crio.errors import ConfigError, OCIRuntimeError
from crio_plugins.runtime_runc import _linux, _seccomp
from crio_plugins.runtime_runc._proc import process_start
from crio_plugins.runtime_runc.cgroups import Hierarchies
from crio_plugins.runtime_runc.namespaces import run_in_new_thread

__all__ = [
    "ARGV",
    "MARKER",
    "PIN_DIR",
    "PauseProcess",
    "PauseSpec",
    "PauseWatch",
    "choose_binary",
    "find",
    "is_static_executable",
    "kill",
    "mountinfo_root_source",
    "pause_processes",
    "release_pin",
    "start",
    "supported",
]

log = logging.getLogger("crio.runtime.runc")

#: Where the pods' PID namespaces are pinned, under the namespaces directory.
PIN_DIR = "pidns"
#: The source name of the pause process's root tmpfs, followed by its pin path.
MARKER = "crio-pause:"
#: What the pause process runs (its binary is bound on /pause while it starts).
ARGV = ("/pause", "-P")
#: The pause process's uid and gid (the Kubernetes pause image's).
PAUSE_ID = 65535
_EXECUTABLE = "/pause"
#: Signals the spawned process gets at their default action (crio ignores SIGPIPE, SIGXFSZ).
_DEFAULT_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
#: crio's own dumpable flag, read before its first pause process (-1: not yet).
_DUMPABLE = -1


@dataclass(frozen=True, slots=True)
class PauseSpec:
    """What one pod's pause process joins."""

    pod_sandbox_id: str
    #: The static pause binary (catatonit).
    binary: str
    #: ``NAMESPACES_DIR/pidns/POD_ID``: made before the process, bind-mounted after.
    pin: Path
    #: Where its tmpfs is mounted in its own mount namespace (the pod's run directory).
    mountpoint: Path
    #: Its cgroupfs path (a leaf below the pod's cgroup).
    cgroup: str
    network: str | None = None
    ipc: str | None = None
    uts: str | None = None


@dataclass(frozen=True, slots=True)
class PauseProcess:
    """One running pause process: PID and start time name it for good."""

    pid: int
    start: int
    pin: str


def supported() -> bool:
    """Whether this machine can start pause processes (x86_64: the raw system call numbers
    and the seccomp filter are known for it alone)."""
    return _linux.raw_syscalls_known() and _seccomp.supported()


def is_static_executable(path: str) -> bool:
    """Whether ``path`` is an executable ELF file without a program interpreter: it must
    run in an empty root, with no dynamic loader or library to find."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return False
    try:
        with open(path, "rb") as handle:
            header = handle.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2:
                return False  # 64-bit ELF only
            order = "little" if header[5] == 1 else "big"
            phoff = int.from_bytes(header[32:40], order)
            phentsize = int.from_bytes(header[54:56], order)
            phnum = int.from_bytes(header[56:58], order)
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
    except OSError:
        return False
    types = (int.from_bytes(table[i : i + 4], order) for i in range(0, len(table), phentsize))
    return 3 not in types  # PT_INTERP


def choose_binary(option: str, key: str) -> str:
    """The pause binary a handler's pods with a shared PID namespace get, or "" (then
    core gives them infra containers).

    :param option: the handler's ``pause_binary``: a path, "" (catatonit from $PATH,
        when there is a static one) or "none".
    :raises ConfigError: ``option`` names a file that is no static executable.
    """
    if option == "none" or not supported():
        return ""
    path = option or shutil.which("catatonit") or ""
    if path and is_static_executable(path):
        return path
    if option:
        raise ConfigError(
            f"{path} is not a statically linked executable (it runs in an empty root)", key=key
        )
    if path:
        log.warning("%s is not statically linked: pods with a shared PID namespace get "
                    "infra containers (%s)", path, key)  # fmt: skip
    return ""


# -- starting -------------------------------------------------------------------


def _inheritable_fds() -> list[int]:
    """crio's descriptors without close-on-exec (none, normally): closed in the child."""
    found = []
    for name in os.listdir("/proc/thread-self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
    return found


def _spawn(spec: PauseSpec) -> int:
    """Start the process (step 1 of the module's docstring); in a new thread, which it
    leaves unprivileged in a namespace of its own: the thread must end afterwards."""
    closed = [0, 1, 2, *_inheritable_fds()]
    last_cap = _linux.last_capability()
    joined = [
        (path, kind)
        for path, kind in (
            (spec.network, _linux.CLONE_NEWNET),
            (spec.ipc, _linux.CLONE_NEWIPC),
            (spec.uts, _linux.CLONE_NEWUTS),
        )
        if path
    ]
    for path, kind in joined:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _linux.setns(fd, kind)
        finally:
            os.close(fd)
    _linux.unshare(_linux.CLONE_FS | _linux.CLONE_NEWNS | _linux.CLONE_NEWPID)
    _linux.mount("none", "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    root = str(spec.mountpoint)
    flags = _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
    _linux.mount(f"{MARKER}{spec.pin}", root, "tmpfs", flags, "mode=0555,size=16k,nr_inodes=8")
    os.close(os.open(root + _EXECUTABLE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC))
    _linux.mount(spec.binary, root + _EXECUTABLE, None, _linux.MS_BIND)
    os.chdir(root)
    # The new root over the old one; the old one then detached from beneath it.
    _linux.pivot_root(".", ".")
    _linux.umount(".", _linux.MNT_DETACH)
    os.chdir("/")
    _linux.drop_thread_privileges(PAUSE_ID, PAUSE_ID, last_cap)
    _seccomp.install()  # this thread's too: it only returns and ends now
    return os.posix_spawn(
        _EXECUTABLE,
        list(ARGV),
        {},
        file_actions=[(os.POSIX_SPAWN_CLOSE, fd) for fd in closed],
        setsid=True,
        setsigmask=(),
        setsigdef=_DEFAULT_SIGNALS,
    )


def _finish(pid: int, spec: PauseSpec, attach: Callable[[int, str], None]) -> None:
    """Step 2 of the module's docstring; in a new thread (it enters a mount namespace)."""
    attach(pid, spec.cgroup)
    _linux.mount(f"/proc/{pid}/ns/pid", str(spec.pin), None, _linux.MS_BIND)
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _linux.unshare(_linux.CLONE_FS)
        _linux.setns(fd, _linux.CLONE_NEWNS)
    finally:
        os.close(fd)
    _linux.umount(_EXECUTABLE, _linux.MNT_DETACH)
    os.unlink(_EXECUTABLE)
    flags = _linux.MS_REMOUNT | _linux.MS_RDONLY | _linux.MS_NOSUID | _linux.MS_NODEV
    _linux.mount("none", "/", None, flags | _linux.MS_NOEXEC)


def _make_pin(pin: Path) -> None:
    pin.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(pin, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))


async def start(spec: PauseSpec, hierarchies: Hierarchies) -> PauseWatch:
    """Start the pod's pause process and watch it (crio is its parent: it reaps it).

    :param hierarchies: where its cgroup is made (the levels it lacks: the caller
        removes them with the pod) and where the process is moved into it.
    :raises OCIRuntimeError: the kernel or the binary refused; nothing is left behind
        but the pin file and the cgroup, which the caller releases with the pod.
    """
    global _DUMPABLE
    if _DUMPABLE < 0:
        _DUMPABLE = _linux.dumpable()
    await asyncio.to_thread(_make_pin, spec.pin)
    # The cgroup's directories are made while the process starts (that is slow on v1).
    made = asyncio.ensure_future(asyncio.to_thread(hierarchies.make, spec.cgroup))
    try:
        pid = await run_in_new_thread(lambda: _spawn(spec))
    except OSError as exc:
        with contextlib.suppress(OSError):
            await made
        raise OCIRuntimeError(
            f"pod sandbox {spec.pod_sandbox_id}: cannot start the pause process "
            f"{spec.binary}: {exc}"
        ) from exc
    finally:
        # The spawning thread's uid change made all of crio undumpable (as a setuid does).
        _linux.set_dumpable(_DUMPABLE)
    # Held before anything can reap it: the PID stays this process's until then.
    watch = PauseWatch(PauseProcess(pid, process_start(pid), str(spec.pin)), os.pidfd_open(pid))
    try:
        await made
        await run_in_new_thread(lambda: _finish(pid, spec, hierarchies.attach))
    except OSError as exc:
        await watch.kill(30.0)
        raise OCIRuntimeError(
            f"pod sandbox {spec.pod_sandbox_id}: cannot set up the pause process: {exc}"
        ) from exc
    return watch


# -- finding again ----------------------------------------------------------------


def _unescape(field: str) -> str:
    """A mountinfo field with its octal escapes (``\\040`` for a space) decoded."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountinfo_root_source(text: str) -> str:
    """The source of the tmpfs mounted on ``/`` in a mountinfo text, or ""."""
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or fields[4] != "/" or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) > sep + 2 and fields[sep + 1] == "tmpfs":
            return _unescape(fields[sep + 2])
    return ""


def _root_source(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as handle:
            head = handle.read(4096)  # the root is listed first; the rest is not read
    except OSError:
        return ""
    return mountinfo_root_source(head.decode(errors="replace"))


def _is_namespace_init(pid: int, user_ns: int) -> bool:
    """Whether ``pid`` is PID 1 of a PID namespace of its own, in crio's user namespace."""
    try:
        if os.stat(f"/proc/{pid}/ns/user").st_ino != user_ns:
            return False
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) > 1 and ids[-1] == "1"
    except OSError:
        return False
    return False


def _own_user_ns() -> int:
    return os.stat("/proc/self/ns/user").st_ino


def _evidence(pid: int, user_ns: int) -> str:
    """The pin path a pause process of crio's names, or "" when ``pid`` is none."""
    source = _root_source(pid)
    if not source.startswith(MARKER) or not _is_namespace_init(pid, user_ns):
        return ""
    return source.removeprefix(MARKER)


def pause_processes(pin_dir: str) -> dict[str, PauseProcess]:
    """Every pause process whose pin lies in ``pin_dir``, by pod id (a scan of /proc)."""
    user_ns = _own_user_ns()
    prefix = os.path.normpath(pin_dir) + "/"
    found: dict[str, PauseProcess] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        pin = _evidence(pid, user_ns)
        if not pin.startswith(prefix) or "/" in pin[len(prefix) :]:
            continue
        start_time = process_start(pid)
        if start_time:
            found[pin[len(prefix) :]] = PauseProcess(pid, start_time, pin)
    return found


def find(pin: str, pid: int = 0, start_time: int = 0) -> PauseProcess | None:
    """The pause process of one pin: the recorded one if it is still that, else by a scan."""
    recorded = pid and start_time and process_start(pid) == start_time
    if recorded and _evidence(pid, _own_user_ns()) == pin:
        return PauseProcess(pid, start_time, pin)
    directory, _, pod_sandbox_id = pin.rpartition("/")
    return pause_processes(directory).get(pod_sandbox_id)


# -- ending -----------------------------------------------------------------------


def _reap(pidfd: int) -> None:
    """Collect the exit status of an ended child (nothing when crio is not its parent)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)


class PauseWatch:
    """A pause process crio watches through a pidfd: its end is seen (and reaped, when
    crio is its parent) the moment it happens, and a kill cannot reach another process."""

    def __init__(self, process: PauseProcess, pidfd: int) -> None:
        self.process = process
        self._pidfd = pidfd
        self.ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(pidfd, self._on_end)

    @classmethod
    def attach(cls, process: PauseProcess) -> PauseWatch | None:
        """Watch a pause process found again (None when it is gone)."""
        try:
            pidfd = os.pidfd_open(process.pid)
        except ProcessLookupError:
            return None
        if process_start(process.pid) != process.start:
            os.close(pidfd)
            return None
        return cls(process, pidfd)

    def _on_end(self) -> None:
        self._loop.remove_reader(self._pidfd)
        _reap(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self.ended.set()

    async def kill(self, timeout: float) -> None:
        """SIGKILL it (every process of its PID namespace dies with it) and wait for its end.

        :raises OCIRuntimeError: it still runs ``timeout`` seconds after the signal.
        """
        if self.ended.is_set():
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        try:
            await asyncio.wait_for(self.ended.wait(), timeout)
        except TimeoutError:
            raise OCIRuntimeError(
                f"pause process {self.process.pid} ({self.process.pin}) still runs "
                f"{timeout:g}s after SIGKILL"
            ) from None

    def close(self) -> None:
        """Stop watching (crio stops); the process runs on."""
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


async def kill(process: PauseProcess, timeout: float) -> None:
    """SIGKILL a pause process found by :func:`pause_processes` and wait for its end."""
    watch = PauseWatch.attach(process)
    if watch is not None:
        try:
            await watch.kill(timeout)
        finally:
            watch.close()


def release_pin(pin: str) -> None:
    """Unmount and remove a pin (absent or never mounted is fine); blocking."""
    _linux.umount(pin)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pin)
