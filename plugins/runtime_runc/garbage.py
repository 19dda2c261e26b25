"""What a crashed crio left of one runc handler, found by id and released.

A crio killed in the middle of an RPC can leave objects that no record
names: a conmon monitoring a container that was never acknowledged, the
runtime's state directory of that container, an exit file, an attach socket
link, the pinned namespaces of a pod that was never recorded. Core knows
which pods and containers exist; everything here with another id goes.

Conmon processes are found through ``/proc``: their command line carries
``--runtime-arg --root=RUNTIME_ROOT``, which is private to one handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from crio_plugins.runtime_runc import _linux
from crio_plugins.runtime_runc._proc import process_start

__all__ = ["MonitorProcess", "collect", "monitors"]

log = logging.getLogger("crio.runtime.runc")

#: Where pinned namespaces live under ``namespaces_dir``, by kind.
PIN_DIRS = ("netns", "ipcns", "utsns")


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


def monitors(runtime_root: str) -> list[MonitorProcess]:
    """The conmon processes of the handler whose runtime state lives in ``runtime_root``."""
    wanted = f"--root={runtime_root}"
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
        if not argv or os.path.basename(argv[0]) != "conmon" or wanted not in argv:
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
                stat = handle.read()
            ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
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


def _remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _unpin(path: str) -> None:
    _linux.umount(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True, slots=True)
class HandlerPaths:
    """The directories one handler uses (exits, attach and namespaces may be shared)."""

    handler_name: str
    runtime_root: str
    exits_dir: str
    attach_dir: str
    namespaces_dir: str


async def collect(
    paths: HandlerPaths,
    delete: Callable[[str], Awaitable[str]],
    sandbox_ids: Collection[str],
    container_ids: Collection[str],
    dry_run: bool,
) -> list[str]:
    """Find (and unless ``dry_run`` release) what belongs to no known pod or container.

    :param delete: ``RUNTIME delete --force ID``; returns an error text, "" on success.
    :returns: one line per object.
    """
    pods, ctrs = set(sandbox_ids), set(container_ids)
    found: list[str] = []
    handler = paths.handler_name

    def note(what: str, owner: str) -> None:
        found.append(f"{what}: {owner} has no record (left by a crash)")
        if not dry_run:
            log.warning("runtime handler %s: %s; removing it", handler, found[-1])

    for process in await asyncio.to_thread(monitors, paths.runtime_root):
        if process.container_id in ctrs:
            continue
        what = "an exec session in" if process.exec_session else "the monitor of"
        note(f"conmon {process.pid} ({what} container {process.container_id})",
             f"container {process.container_id}")  # fmt: skip
        if not dry_run:
            await _settle(process)
            _kill(process)
    for name in await asyncio.to_thread(_entries, paths.runtime_root):
        if name in ctrs or not os.path.isdir(os.path.join(paths.runtime_root, name)):
            continue
        note(f"runtime state {paths.runtime_root}/{name}", f"container {name}")
        if not dry_run:
            error = await delete(name)
            if error:
                log.error(
                    "runtime handler %s: container %s: delete failed: %s", handler, name, error
                )
    for name in await asyncio.to_thread(_entries, paths.exits_dir):
        if name in ctrs or name.startswith("."):
            continue
        note(f"exit file {paths.exits_dir}/{name}", f"container {name}")
        if not dry_run:
            await asyncio.to_thread(_remove_path, os.path.join(paths.exits_dir, name))
    for name in await asyncio.to_thread(_entries, paths.attach_dir):
        if name in ctrs:
            continue
        note(f"attach socket link {paths.attach_dir}/{name}", f"container or exec {name}")
        if not dry_run:
            await asyncio.to_thread(_remove_path, os.path.join(paths.attach_dir, name))
    for kind in PIN_DIRS:
        directory = os.path.join(paths.namespaces_dir, kind)
        for name in await asyncio.to_thread(_entries, directory):
            if name in pods:
                continue
            note(f"pinned namespace {directory}/{name}", f"pod sandbox {name}")
            if not dry_run:
                try:
                    await asyncio.to_thread(_unpin, os.path.join(directory, name))
                except OSError as exc:
                    log.error("pod sandbox %s: cannot unpin %s: %s", name, kind, exc)
    return found
