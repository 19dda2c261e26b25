"""A pod VM's network namespace: made by a thread, pinned by a bind mount.

The VM's pod keeps only its network namespace on the host (where CNI wires
the veth and the supervisor the tap); UTS, IPC and PID namespaces are the
guest's. A fresh thread unshares ``CLONE_NEWNET`` and bind-mounts its
``/proc/thread-self/ns/net`` onto ``NAMESPACES_DIR/netns/POD_ID``, then ends;
the mount keeps the namespace alive until :func:`unpin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import threading
from pathlib import Path

from crio.errors import OCIRuntimeError
from crio_plugins.runtime_clear import _mounts

__all__ = ["pin_netns", "unpin_netns"]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _pin(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        source = Path(f"/proc/self/task/{threading.get_native_id()}/ns/net")
        _mounts.bind(source, target)
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise


async def pin_netns(namespaces_dir: Path, pod_sandbox_id: str) -> str:
    """Create and pin a network namespace for the pod; its path."""
    target = namespaces_dir / "netns" / pod_sandbox_id
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def body() -> None:
        error: BaseException | None = None
        try:
            _pin(target)
        except BaseException as exc:
            error = exc
        loop.call_soon_threadsafe(settle, error)

    # A thread of its own, which ends with the namespace it entered.
    threading.Thread(target=body, name="crio-vm-netns", daemon=True).start()
    try:
        await done
    except OSError as exc:
        raise OCIRuntimeError(f"pod sandbox {pod_sandbox_id}: no network namespace: {exc}") from exc
    return str(target)


def unpin_netns(path: str) -> None:
    """Unmount and remove the pin (blocking; call in a thread). Absent is fine."""
    _mounts.unmount(Path(path))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
