"""A pod's namespaces without a pause process: created by a thread, pinned by bind mounts.

A fresh thread unshares the network, IPC and UTS namespaces (only the ones
the pod gets), sets the hostname, brings ``lo`` up and writes the pod's
sysctls from inside them, then bind-mounts its ``/proc/thread-self/ns/*``
files onto ``NAMESPACES_DIR/{netns,ipcns,utsns}/POD_ID``. The thread ends;
the mounts keep the namespaces alive until :func:`unpin` unmounts them.
A new thread each time: a pooled thread would carry the namespaces on into
unrelated work.

The pod's /dev/shm is a tmpfs mounted in the pod's run directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from crio.errors import InvalidRequestError, OCIRuntimeError
from crio_plugins.runtime_runc import _linux

__all__ = ["NamespacePaths", "mount_shm", "pin", "run_in_new_thread", "unmount_shm", "unpin"]

T = TypeVar("T")

_KINDS = {
    "network": ("netns", "net", _linux.CLONE_NEWNET),
    "ipc": ("ipcns", "ipc", _linux.CLONE_NEWIPC),
    "uts": ("utsns", "uts", _linux.CLONE_NEWUTS),
}
SHM_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class NamespacePaths:
    network: str | None = None
    ipc: str | None = None
    uts: str | None = None


async def run_in_new_thread(func: Callable[[], T]) -> T:
    """Run ``func`` in a thread of its own (which then ends) and return its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        try:
            result = func()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=body, name="crio-ns", daemon=True).start()
    return await future


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def _pin_in_thread(targets: Mapping[str, Path], hostname: str, sysctls: Mapping[str, str]) -> None:
    flags = 0
    for kind in targets:
        flags |= _KINDS[kind][2]
    made: list[Path] = []
    mounted: list[Path] = []
    try:
        for path in targets.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
            made.append(path)
        _linux.unshare(flags)
        tid = threading.get_native_id()
        for kind, path in targets.items():
            _linux.mount(f"/proc/self/task/{tid}/ns/{_KINDS[kind][1]}", str(path), None,
                         _linux.MS_BIND)  # fmt: skip
            mounted.append(path)
        if "uts" in targets and hostname:
            _linux.sethostname(hostname)
        if "network" in targets:
            _linux.bring_loopback_up()
        for key, value in sysctls.items():
            try:
                with open(_sysctl_path(key), "w") as handle:
                    handle.write(value)
            except FileNotFoundError:
                raise InvalidRequestError(
                    f"linux.sysctls[{key}]: no such sysctl in the pod's namespaces"
                ) from None
            except OSError as exc:
                raise InvalidRequestError(
                    f"linux.sysctls[{key}]: cannot set {value!r}: {exc.strerror}"
                ) from None
    except BaseException:
        for path in mounted:
            with contextlib.suppress(OSError):
                _linux.umount(str(path))
        for path in made:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


async def pin(
    namespaces_dir: Path,
    pod_sandbox_id: str,
    kinds: tuple[str, ...],
    hostname: str = "",
    sysctls: Mapping[str, str] | None = None,
) -> NamespacePaths:
    """Create and pin the namespaces named in ``kinds`` ("network", "ipc", "uts").

    :raises InvalidRequestError: a sysctl that does not exist or cannot be set.
    :raises OCIRuntimeError: the kernel refused to create or pin a namespace.
    """
    targets = {kind: namespaces_dir / _KINDS[kind][0] / pod_sandbox_id for kind in kinds}
    if not targets:
        return NamespacePaths()
    try:
        await run_in_new_thread(lambda: _pin_in_thread(targets, hostname, sysctls or {}))
    except OSError as exc:
        raise OCIRuntimeError(
            f"pod sandbox {pod_sandbox_id}: cannot create namespaces: {exc}"
        ) from exc
    return NamespacePaths(**{kind: str(path) for kind, path in targets.items()})


def unpin(paths: NamespacePaths) -> None:
    """Unmount and remove the pins (absent ones are fine); blocking, call in a thread."""
    for path in (paths.network, paths.ipc, paths.uts):
        if not path:
            continue
        _linux.umount(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def mount_shm(path: Path, size: int = 0) -> None:
    """A tmpfs for the pod's /dev/shm (``size`` bytes, 0: 64 MiB); blocking, call in a thread."""
    path.mkdir(parents=True, exist_ok=True)
    flags = _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
    _linux.mount("shm", str(path), "tmpfs", flags, f"mode=1777,size={size or SHM_SIZE}")


def unmount_shm(path: Path) -> None:
    if path.exists():
        _linux.umount(str(path))
        with contextlib.suppress(OSError):
            path.rmdir()
