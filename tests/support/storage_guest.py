"""A qemu guest for what the host kernel lacks: device-mapper thin pools and nfsd.

The guest runs the Debian cloud kernel of the pod-VM assets (``crio
vm-assets``) on the host's root (read-only, over virtiofs), with the modules
loaded from the stored module tree and a scratch disk (a sparse file on the
host, ext4 in the guest, mounted at :data:`SCRATCH`) for loop files, stores
and exports. Commands run in it through the VM harness' agent; the checkout
and its venv are visible at the same paths as on the host.

    with storage_guest() as guest:          # skips (pytest) where it cannot boot
        result = guest.sh("dmsetup targets")

Used by ``tests/integration/storage/test_guest_drivers.py`` and ``bench/store.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.vm import LoopThread

__all__ = ["GUEST_MODULES", "SCRATCH", "Guest", "GuestUnavailable", "storage_guest"]

#: Where the scratch disk is mounted in the guest (/run is the guest's own tmpfs).
SCRATCH = "/run/scratch"
#: The kernel modules the storage guest loads (with their dependencies).
GUEST_MODULES = ("virtio_blk", "loop", "overlay", "dm_thin_pool", "xfs", "nfsd", "nfsv4")
DISK_BYTES = 16 << 30
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class GuestUnavailable(Exception):
    """The guest cannot be had here; the message says why (tests skip with it)."""


@dataclass
class Guest:
    loop: LoopThread
    vm: Any  # crio_plugins.runtime_clear.vm.VM
    base: Path

    def run(
        self, argv: Sequence[str], env: Sequence[str] = (), timeout: float = 600.0, cwd: str = ""
    ) -> Any:
        """Run ``argv`` in the guest; returns the harness' RunResult (exit_code, stdout, stderr)."""
        return self.loop.run(
            self.vm.run(list(argv), env=[PATH, *env], cwd=cwd, timeout=timeout), timeout + 60
        )

    def sh(self, command: str, timeout: float = 600.0, env: Sequence[str] = ()) -> str:
        """Run a shell command; its stdout. :raises AssertionError: it failed."""
        result = self.run(["sh", "-c", command], env=env, timeout=timeout)
        out, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
        if result.exit_code != 0:
            raise AssertionError(f"in the guest: {command}: exit {result.exit_code}: {err}{out}")
        return out


def _assets() -> Any:
    from crio.errors import CrioError
    from crio_plugins.runtime_clear import assets as vm_assets
    from support.vm import INSTALLED_ASSETS, TEST_ASSETS

    for directory in (INSTALLED_ASSETS, TEST_ASSETS):
        with contextlib.suppress(CrioError):
            return vm_assets.load(directory)
    try:
        return vm_assets.ensure(TEST_ASSETS)
    except CrioError as exc:
        raise GuestUnavailable(f"the guest kernel cannot be had here: {exc}") from exc


#: The guest's own tmpfs mounts over the host root (the pod VM initramfs makes them).
GUEST_TMPFS = ("/tmp", "/run")
#: Where the host root is mounted a second time, whole, when a path under a guest tmpfs is
#: needed (the virtiofs tag ``root`` is the same share the guest's / comes from).
HOST_ROOT = "/run/host-root"


def _hidden(path: Path) -> bool:
    return any(path == Path(t) or Path(t) in path.parents for t in GUEST_TMPFS)


def _expose_checkout(guest: Guest) -> None:
    """Make the checkout and its venv visible at their host paths in the guest.

    A checkout under /tmp or /run (a clean clone in CI may be anywhere) lies under the
    guest's own tmpfs: bind it from a second, read-only mount of the host root.
    """
    repo = Path(__file__).resolve().parents[2]
    venv = Path(sys.prefix)
    hidden = sorted({str(p) for p in (repo, venv) if _hidden(p)})
    if not hidden:
        return
    binds = " && ".join(f"mkdir -p {p} && mount --bind {HOST_ROOT}{p} {p}" for p in hidden)
    guest.sh(f"mkdir -p {HOST_ROOT} && mount -t virtiofs -o ro root {HOST_ROOT} && {binds}")


@contextlib.contextmanager
def storage_guest(memory_mib: int = 2048, vcpus: int = 2) -> Iterator[Guest]:
    """Boot the storage guest (see the module docstring); kill it and remove its files after.

    :raises GuestUnavailable: no qemu, no kernel, or the kernel lacks a module.
    """
    import json

    from crio_plugins.runtime_clear.vm import VM, VMSpec, missing_tools

    assets = _assets()
    if assets.modules_dir is None:
        raise GuestUnavailable(f"the VM assets in {assets.directory} keep no module tree")
    index = json.loads((assets.modules_dir / "modules.json").read_text())
    lacking = [name for name in GUEST_MODULES if name not in index]
    if lacking:
        raise GuestUnavailable(f"kernel {assets.kernel_release} has no module {', '.join(lacking)}")
    base = Path(tempfile.mkdtemp(prefix="crio-stguest-", dir="/var/tmp"))
    disk = base / "scratch.img"
    with open(disk, "wb") as handle:
        handle.truncate(DISK_BYTES)
    spec = VMSpec(
        run_dir=base / "vm", kernel=assets.kernel, initrd=assets.initrd,
        memory_mib=memory_mib, vcpus=vcpus, hostname="storage-guest",
        qemu_args=("-drive", f"file={disk},if=none,id=scratch,format=raw,cache=unsafe",
                   "-device", "virtio-blk-device,drive=scratch"),
    )  # fmt: skip
    problem = missing_tools(spec)
    if problem:
        shutil.rmtree(base, ignore_errors=True)
        raise GuestUnavailable(problem)
    loop = LoopThread()
    vm = None
    try:
        vm = loop.run(VM.boot(spec, timeout=600), 660)
        guest = Guest(loop, vm, base)
        modules = str(assets.modules_dir)
        loop.run(vm.call("modprobe", names=list(GUEST_MODULES), modules_dir=modules))
        # /var/tmp on the scratch disk: skopeo and podman stage blobs there whatever TMPDIR says.
        guest.sh("for i in $(seq 100); do test -b /dev/vda && break; sleep 0.1; done; "
                 f"mkfs.ext4 -q /dev/vda && mkdir -p {SCRATCH} "
                 f"&& mount -o noatime /dev/vda {SCRATCH} && mkdir {SCRATCH}/var-tmp "
                 f"&& mount --bind {SCRATCH}/var-tmp /var/tmp")  # fmt: skip
        _expose_checkout(guest)
        yield guest
    finally:
        if vm is not None:
            loop.run(vm.kill())
            loop.run(vm.release())
        loop.close()
        shutil.rmtree(base, ignore_errors=True)
