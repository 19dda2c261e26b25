"""What a crashed crio left of one runc handler, found by positive evidence and released.

A crio killed in the middle of an RPC can leave objects that no record
names: a conmon monitoring a container that was never acknowledged, the
runtime's state directory of that container, an exit file, an attach socket
link, the pinned namespaces of a pod that was never recorded.

Not knowing an object is no proof that crio made it. On a node the runtime
roots (``/run/runc``, ``/run/crun``) hold podman's and buildah's containers
too, and the default attach directory (``/run/crio``) holds crio's other
directories (``exits``, ``ns``) and files (``version``). So an object is
released only on positive evidence that this crio made it:

- a conmon whose command line names this crio's attach directory, its exit
  directory (unless it runs an exec), the handler's runtime root, and a
  bundle below crio's run root;
- runtime state whose bundle lies below crio's run root and whose
  annotations name the container as crio names its own
  (``io.kubernetes.cri-o.ContainerID``);
- an exit file, an attach link or a namespace pin with a name of crio's own
  form (a 64-digit hex id; an exec session's 16 digits for attach links), of
  the right kind (a regular file, a symlink, a pin), in a directory that is
  crio's and never another configured path;
- a pause process (pause.py) whose root is a tmpfs named after a pin of crio's
  form in this crio's namespaces directory, that is the init of a PID
  namespace of its own, in crio's user namespace.

Anything else is left alone; a foreign container is mentioned once, at
debug level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import stat
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crio.errors import CrioError
from crio_plugins.runtime_runc import _linux, pause
from crio_plugins.runtime_runc._proc import process_start

__all__ = [
    "HandlerPaths",
    "MonitorProcess",
    "collect",
    "is_crio_monitor",
    "is_crio_state",
    "monitors",
]

log = logging.getLogger("crio.runtime.runc")

#: Where pinned namespaces live under ``namespaces_dir``, by kind.
PIN_DIRS = ("netns", "ipcns", "utsns", pause.PIN_DIR)
#: crio's pod and container ids (core's ``new_id``).
CRIO_ID = re.compile(r"[0-9a-f]{64}")
#: The attach link of an exec sync session is named by its 16-digit id (conmon's ``-u``).
EXEC_ID = re.compile(r"[0-9a-f]{16}")
#: The annotation crio writes into every container's config.json (as CRI-O does).
CONTAINER_ID_ANNOTATION = "io.kubernetes.cri-o.ContainerID"


@dataclass(frozen=True, slots=True)
class HandlerPaths:
    """The directories one handler uses (exits, attach and namespaces may be shared,
    and nested in one another: the defaults put exits/ and ns/ inside the attach dir)."""

    handler_name: str
    runtime_root: str
    exits_dir: str
    attach_dir: str
    namespaces_dir: str
    #: crio's run root: every bundle crio makes lies below it.
    bundle_root: str
    #: Every path crio is configured with: none of them is ever garbage.
    reserved: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class MonitorProcess:
    """One conmon process: the container it watches, and whether it runs an exec."""

    pid: int
    start: int
    container_id: str
    uuid: str
    exec_session: bool


def _argument(argv: list[str], flag: str) -> str:
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(flag) + 1]
    return ""


def _below(path: str, root: str) -> bool:
    """Whether ``path`` lies strictly below directory ``root`` (both resolved)."""
    if not path or not root or not path.startswith("/"):
        return False
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path != root and path.startswith(root.rstrip("/") + "/")


def _runtime_roots(argv: list[str]) -> list[str]:
    """The ``--root=`` values conmon passes to the runtime (``--runtime-arg --root=R``)."""
    return [
        argv[i + 1].removeprefix("--root=")
        for i, arg in enumerate(argv[:-1])
        if arg == "--runtime-arg" and argv[i + 1].startswith("--root=")
    ]


def is_crio_monitor(argv: list[str], paths: HandlerPaths) -> bool:
    """Whether a process command line is a conmon this crio started for this handler.

    Its attach directory, runtime root and bundle must be this crio's, and a
    container monitor (not an exec) must write its exit file where crio reads them.
    """
    if not argv or os.path.basename(argv[0]) != "conmon":
        return False
    if os.path.normpath(_argument(argv, "--socket-dir-path") or "/") != os.path.normpath(
        paths.attach_dir
    ):
        return False
    if [os.path.normpath(r) for r in _runtime_roots(argv)] != [
        os.path.normpath(paths.runtime_root)
    ]:
        return False
    if not _below(_argument(argv, "-b"), paths.bundle_root):
        return False
    exec_session = "-e" in argv or "--exec" in argv
    exit_dir = _argument(argv, "--exit-dir")
    return exec_session or (
        bool(exit_dir) and os.path.normpath(exit_dir) == os.path.normpath(paths.exits_dir)
    )


def is_crio_state(container_id: str, state: Mapping[str, Any], bundle_root: str) -> bool:
    """Whether a runtime's ``state`` answer is a container this crio made.

    :param state: the runtime's OCI state (``RUNTIME state ID``): its bundle must lie
        below crio's run root and its annotations name ``container_id`` as crio does.
    """
    bundle = state.get("bundle")
    annotations = state.get("annotations")
    if not isinstance(bundle, str) or not isinstance(annotations, Mapping):
        return False
    return _below(bundle, bundle_root) and annotations.get(CONTAINER_ID_ANNOTATION) == container_id


def monitors(paths: HandlerPaths) -> list[MonitorProcess]:
    """The conmon processes this crio started for the handler of ``paths``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        if not is_crio_monitor(argv, paths):
            continue
        pid = int(entry)
        found.append(
            MonitorProcess(
                pid=pid,
                start=process_start(pid),
                container_id=_argument(argv, "-c"),
                uuid=_argument(argv, "-u"),
                exec_session="-e" in argv or "--exec" in argv,
            )
        )
    return found


def _creating(process: MonitorProcess) -> bool:
    """Whether ``RUNTIME create`` of the monitored container is still running under conmon."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat_line = handle.read()
            ppid = int(stat_line[stat_line.rfind(b")") + 2 :].split()[1])
            if ppid != process.pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if b"create" in argv and process.container_id.encode() in argv:
            return True
    return False


async def _settle(process: MonitorProcess, timeout: float = 30.0) -> None:
    """Let a ``create`` that conmon started finish: killed halfway, it could leave a
    container that no delete would find."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await asyncio.to_thread(_creating, process):
        if asyncio.get_running_loop().time() > deadline:
            log.error("container %s: its runtime create does not end", process.container_id)
            return
        await asyncio.sleep(0.02)


def _kill(process: MonitorProcess) -> None:
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return
    try:
        if process_start(process.pid) == process.start:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def _entries(directory: str | Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def _kind(path: str) -> int:
    """``st_mode`` of ``path`` itself (a symlink is not followed); 0 when it is gone."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def _unpin(path: str) -> None:
    _linux.umount(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _reserved(path: str, paths: HandlerPaths) -> bool:
    """Whether ``path`` is a configured path (its directory resolved: /var/run is /run)."""
    parent, name = os.path.split(os.path.normpath(path))
    resolved = os.path.join(os.path.realpath(parent), name)
    return os.path.normpath(path) in paths.reserved or resolved in paths.reserved


def crio_exit_files(paths: HandlerPaths) -> list[str]:
    """Exit files of crio's form: regular files named by a container id."""
    found = []
    for name in _entries(paths.exits_dir):
        path = os.path.join(paths.exits_dir, name)
        if CRIO_ID.fullmatch(name) and stat.S_ISREG(_kind(path)) and not _reserved(path, paths):
            found.append(name)
    return found


def crio_attach_links(paths: HandlerPaths) -> list[str]:
    """Attach links of crio's form: conmon's symlinks named by a container or exec id.

    A directory (``exits``, ``ns``: the defaults nest them here) is never one.
    """
    found = []
    for name in _entries(paths.attach_dir):
        path = os.path.join(paths.attach_dir, name)
        if not (CRIO_ID.fullmatch(name) or EXEC_ID.fullmatch(name)):
            continue
        if stat.S_ISLNK(_kind(path)) and not _reserved(path, paths):
            found.append(name)
    return found


def crio_pins(paths: HandlerPaths, kind: str) -> list[str]:
    """Namespace pins of crio's form in ``namespaces_dir/KIND``: named by a pod id."""
    directory = os.path.join(paths.namespaces_dir, kind)
    found = []
    for name in _entries(directory):
        path = os.path.join(directory, name)
        if CRIO_ID.fullmatch(name) and not stat.S_ISDIR(_kind(path)) and not _reserved(path, paths):
            found.append(name)
    return found


#: ``RUNTIME state ID`` as a mapping, or None when the runtime cannot tell.
StateReader = Callable[[str], Awaitable["Mapping[str, Any] | None"]]


@dataclass(slots=True)
class _Pass:
    """One pass of :func:`collect`: what it found, and how it reports."""

    paths: HandlerPaths
    dry_run: bool
    found: list[str] = field(default_factory=list)

    def note(self, what: str, owner: str) -> None:
        self.found.append(f"{what}: {owner} has no record (left by a crash)")
        if not self.dry_run:
            log.warning("runtime handler %s: %s; removing it", self.paths.handler_name,
                        self.found[-1])  # fmt: skip


async def _collect_monitors(pass_: _Pass, ctrs: set[str]) -> None:
    for process in await asyncio.to_thread(monitors, pass_.paths):
        if process.container_id in ctrs:
            continue
        what = "an exec session in" if process.exec_session else "the monitor of"
        pass_.note(f"conmon {process.pid} ({what} container {process.container_id})",
                   f"container {process.container_id}")  # fmt: skip
        if not pass_.dry_run:
            await _settle(process)
            _kill(process)


async def _collect_runtime_state(
    pass_: _Pass,
    ctrs: set[str],
    state: StateReader,
    delete: Callable[[str], Awaitable[str]],
    foreign: set[str],
) -> None:
    paths = pass_.paths
    for name in await asyncio.to_thread(_entries, paths.runtime_root):
        if name in ctrs or not os.path.isdir(os.path.join(paths.runtime_root, name)):
            continue
        answer = await state(name)
        if answer is None or not is_crio_state(name, answer, paths.bundle_root):
            if name not in foreign:
                foreign.add(name)
                bundle = (answer or {}).get("bundle", "unknown")
                log.debug("runtime handler %s: container %s in %s is not crio's (bundle %s); "
                          "leaving it alone", paths.handler_name, name, paths.runtime_root,
                          bundle)  # fmt: skip
            continue
        pass_.note(f"runtime state {paths.runtime_root}/{name}", f"container {name}")
        if not pass_.dry_run:
            error = await delete(name)
            if error:
                log.error("runtime handler %s: container %s: delete failed: %s",
                          paths.handler_name, name, error)  # fmt: skip


async def _collect_pauses(pass_: _Pass, pods: set[str]) -> None:
    """Pause processes of pods with no record: killed before their pins are released."""
    pin_dir = os.path.join(pass_.paths.namespaces_dir, pause.PIN_DIR)
    found = await asyncio.to_thread(pause.pause_processes, pin_dir)
    for pod_sandbox_id, process in sorted(found.items()):
        if pod_sandbox_id in pods or not CRIO_ID.fullmatch(pod_sandbox_id):
            continue
        pass_.note(f"pause process {process.pid} (pod sandbox {pod_sandbox_id})",
                   f"pod sandbox {pod_sandbox_id}")  # fmt: skip
        if not pass_.dry_run:
            try:
                await pause.kill(process, 30.0)
            except CrioError as exc:
                log.error("pod sandbox %s: %s", pod_sandbox_id, exc)


async def _collect_files(pass_: _Pass, pods: set[str], ctrs: set[str]) -> None:
    paths = pass_.paths
    for name in await asyncio.to_thread(crio_exit_files, paths):
        if name in ctrs:
            continue
        pass_.note(f"exit file {paths.exits_dir}/{name}", f"container {name}")
        if not pass_.dry_run:
            await asyncio.to_thread(_unlink, os.path.join(paths.exits_dir, name))
    for name in await asyncio.to_thread(crio_attach_links, paths):
        if name in ctrs:
            continue
        pass_.note(f"attach socket link {paths.attach_dir}/{name}", f"container or exec {name}")
        if not pass_.dry_run:
            await asyncio.to_thread(_unlink, os.path.join(paths.attach_dir, name))
    for kind in PIN_DIRS:
        directory = os.path.join(paths.namespaces_dir, kind)
        for name in await asyncio.to_thread(crio_pins, paths, kind):
            if name in pods:
                continue
            pass_.note(f"pinned namespace {directory}/{name}", f"pod sandbox {name}")
            if not pass_.dry_run:
                try:
                    await asyncio.to_thread(_unpin, os.path.join(directory, name))
                except OSError as exc:
                    log.error("pod sandbox %s: cannot unpin %s: %s", name, kind, exc)


async def collect(
    paths: HandlerPaths,
    state: StateReader,
    delete: Callable[[str], Awaitable[str]],
    sandbox_ids: Collection[str],
    container_ids: Collection[str],
    dry_run: bool,
    foreign: set[str] | None = None,
) -> list[str]:
    """Find (and unless ``dry_run`` release) what this crio made that no record names.

    :param state: ``RUNTIME state ID``, asked only for ids no record names.
    :param delete: ``RUNTIME delete --force ID``; returns an error text, "" on success.
    :param foreign: ids already found not to be crio's (mentioned once); updated.
    :returns: one line per object.
    """
    pass_ = _Pass(paths, dry_run)
    pods, ctrs = set(sandbox_ids), set(container_ids)
    await _collect_monitors(pass_, ctrs)
    await _collect_runtime_state(pass_, ctrs, state, delete, set() if foreign is None else foreign)
    await _collect_pauses(pass_, pods)
    await _collect_files(pass_, pods, ctrs)
    return pass_.found
