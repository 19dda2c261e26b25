"""Pod-VM test support: the kernel and initramfs, and an event loop a module can share.

``vm_assets_or_skip()`` finds or builds the assets once per machine and skips
(with the reason) where qemu, virtiofsd or the kernel cannot be had; nothing
is faked. ``LoopThread`` runs one asyncio loop in a thread so that a
module-scoped VM can serve many synchronous tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = [
    "TEST_TEMPLATES",
    "LoopThread",
    "busybox_rootfs",
    "prune_template_dirs",
    "shared_templates",
    "templates_dir",
    "vm_assets_or_skip",
]

T = TypeVar("T")

#: Where tests keep the assets between runs (override with CRIO_TEST_VM_ASSETS).
TEST_ASSETS = Path(os.environ.get("CRIO_TEST_VM_ASSETS", "/var/tmp/crio-test/vm-assets"))
#: What `make prepare` (crio vm-assets with the default root) leaves.
INSTALLED_ASSETS = Path("/var/lib/containers/storage/vm-assets")
#: Where the crio of every test module keeps its pod VM templates (``template_dir``):
#: one directory per checkout, so the first module builds the template and the
#: others restore from it; another checkout's keys (its agent differs) live elsewhere.
TEST_TEMPLATES = Path(
    os.environ.get(
        "CRIO_TEST_VM_TEMPLATES",
        "/var/tmp/crio-test/vm-templates-"
        + hashlib.sha256(str(Path(__file__).resolve().parents[2]).encode()).hexdigest()[:10],
    )
)


#: In a checkout's template directory: the checkout it serves, so that another run can
#: tell when that checkout is gone (a CI clone removed after its run).
CHECKOUT_RECORD = "checkout"
_pruned = False


def templates_dir() -> Path:
    """:data:`TEST_TEMPLATES`, marked as this checkout's; once per process, the
    directories of checkouts that are gone are pruned (see :func:`prune_template_dirs`)."""
    global _pruned
    if not _pruned and "CRIO_TEST_VM_TEMPLATES" not in os.environ:
        _pruned = True
        checkout = Path(__file__).resolve().parents[2]
        TEST_TEMPLATES.mkdir(parents=True, exist_ok=True)
        (TEST_TEMPLATES / CHECKOUT_RECORD).write_text(f"{checkout}\n")
        prune_template_dirs(TEST_TEMPLATES)
    return TEST_TEMPLATES


def prune_template_dirs(own: Path) -> list[str]:
    """Remove the template directories beside ``own`` whose checkout is gone.

    Each checkout has a directory (its agent differs, hence its keys), and a
    clean clone per CI run would otherwise leave one more (120-250 MB) per run.
    A sibling is one of ours by its name (``own``'s prefix, in the tests' own
    cache directory). It is dead when the checkout its :data:`CHECKOUT_RECORD`
    names no longer exists, or when it has none (made before the record
    existed). Its templates go through the template store's own clean-up, which
    skips any template a running crio holds, and the directory goes only once
    nothing else is left in it. Returns what was removed.
    """
    from crio_plugins.runtime_clear import _template_store

    prefix = own.name.rsplit("-", 1)[0] + "-"
    removed: list[str] = []
    for sibling in sorted(own.parent.glob(prefix + "*")):
        if sibling == own or not sibling.is_dir():
            continue
        record = sibling / CHECKOUT_RECORD
        try:
            checkout = record.read_text().strip()
        except FileNotFoundError:
            checkout = ""
        except OSError:
            continue
        if checkout and Path(checkout).is_dir():
            continue
        # No key is kept: every template nobody holds is removed.
        removed += _template_store.clean(sibling, keep="0" * 64)
        if any(path.name != CHECKOUT_RECORD for path in sibling.iterdir()):
            continue  # a template in use, or something that is not ours: left alone
        record.unlink(missing_ok=True)
        sibling.rmdir()
        removed.append(str(sibling))
    return removed


def vm_assets_or_skip() -> Any:
    """The stored assets (crio_plugins.runtime_clear.assets.Assets), built if needed."""
    from crio.errors import CrioError
    from crio_plugins.runtime_clear import assets

    if os.geteuid() != 0:
        pytest.skip("pod VMs need root (mount namespaces, virtiofsd, taps)")
    for tool in ("/usr/bin/qemu-system-x86_64", "/usr/lib/qemu/virtiofsd"):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} is not installed (Debian qemu-system-x86)")
    for directory in (INSTALLED_ASSETS, TEST_ASSETS):
        try:
            found = assets.load(directory)
        except CrioError:
            continue
        else:
            return found
    try:
        return assets.ensure(TEST_ASSETS)
    except CrioError as exc:
        pytest.skip(f"the pod VM kernel cannot be had here: {exc}")


def shared_templates(tables: dict[str, dict[str, Any]]) -> None:
    """Give every ``runtime_type = "vm"`` handler without a ``template_dir`` the tests' one."""
    for name, keys in tables.items():
        if name.startswith("crio.runtime.runtimes.") and keys.get("runtime_type") == "vm":
            keys.setdefault("template_dir", str(templates_dir()))


def busybox_rootfs(target: Path, commands: tuple[str, ...] = ()) -> Path:
    """A minimal root filesystem: busybox-static and symlinks for ``commands``."""
    (target / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("proc", "sys", "dev", "tmp", "etc", "root"):
        (target / name).mkdir(exist_ok=True)
    shutil.copy2("/bin/busybox", target / "bin" / "busybox")
    for name in {"sh", "echo", "cat", "sleep", "uname", "hostname", "id", "ls", *commands}:
        link = target / "bin" / name
        if not link.exists():
            link.symlink_to("busybox")
    return target


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` waits for a coroutine from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
