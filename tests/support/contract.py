"""Where the graph-driver contract suite (``tests/contract``) runs each driver.

A :class:`DriverEnv` is a place a driver can keep layers (a directory on the
file system it needs) and the ``storage_option`` entries to open it with.
:func:`driver_env` makes one for a built-in driver: a plain directory for
overlay and vfs, a btrfs file system on a loop file for btrfs, loop files
for devicemapper's thin pool (where the kernel has device-mapper); any other
name (a vendor's driver) gets a directory under ``--driver-root``. Each env
is a context manager that removes everything it made.

``skip`` says why a driver cannot run here; the suite skips with that reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from crio.storage.mount import unmount

__all__ = [
    "BUILTIN_DRIVERS",
    "DriverEnv",
    "btrfs_loop",
    "btrfs_missing",
    "driver_env",
    "kernel_has",
    "unmount_under",
]

#: What the suite runs when no ``--driver`` is given.
BUILTIN_DRIVERS = ("overlay", "vfs", "btrfs", "devicemapper", "aufs")
#: The btrfs loop file: mkfs.btrfs wants more than 114 MiB; layers are small.
BTRFS_BYTES = 1 << 30


@dataclass
class DriverEnv:
    """A driver, where its stores go, and how to open them."""

    name: str
    base: Path
    options: tuple[str, ...] = ()
    skip: str = ""
    #: Makes a driver-specific nested object in a writable layer (btrfs: a
    #: subvolume) that removal must take away too.
    make_nested: Callable[[Path], None] | None = None
    #: ``storage_option`` entries skopeo and podman need besides ``options``.
    tool_options: tuple[str, ...] = ()
    _count: list[int] = field(default_factory=lambda: [0])

    def new_dirs(self) -> tuple[Path, Path]:
        """A fresh (root, runroot) pair for one test."""
        self._count[0] += 1
        top = self.base / f"t{self._count[0]:03d}"
        return top / "root", top / "run"


def kernel_has(fs: str) -> bool:
    """Whether ``/proc/filesystems`` lists ``fs``."""
    try:
        with open("/proc/filesystems") as handle:
            return any(line.split()[-1:] == [fs] for line in handle)
    except OSError:
        return False


def unmount_under(path: Path) -> None:
    """Unmount everything mounted below ``path``, deepest first."""
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    prefix = str(path).rstrip("/") + "/"
    inside = [p for p in points if p.startswith(prefix) or p == str(path)]
    for point in sorted(inside, reverse=True):
        unmount(point)


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def _plain(name: str, parent: Path | None, options: Sequence[str]) -> Iterator[DriverEnv]:
    # Short: podman refuses a run root longer than 50 characters.
    base = Path(tempfile.mkdtemp(prefix=f"cc-{name[:4]}-", dir=parent or "/var/tmp"))
    try:
        yield DriverEnv(name, base, tuple(options))
    finally:
        unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def btrfs_missing() -> str:
    """Why a btrfs file system cannot be made here, or ""."""
    if not kernel_has("btrfs"):
        return f"kernel {os.uname().release} has no btrfs"
    if shutil.which("mkfs.btrfs") is None:
        return "mkfs.btrfs is not installed (Debian btrfs-progs)"
    return ""


@contextlib.contextmanager
def btrfs_loop(size: int = BTRFS_BYTES) -> Iterator[Path]:
    """A fresh btrfs file system on a sparse loop file, mounted; all of it
    (mounts below it too) gone afterwards. Check :func:`btrfs_missing` first."""
    work = Path(tempfile.mkdtemp(prefix="crio-btrfs-", dir="/var/tmp"))
    image, mnt = work / "fs.img", work / "mnt"
    mnt.mkdir()
    device = ""
    try:
        with open(image, "wb") as handle:
            handle.truncate(size)
        _run("mkfs.btrfs", "-q", str(image))
        device = _run("losetup", "--find", "--show", str(image))
        _run("mount", "-t", "btrfs", device, str(mnt))
        yield mnt
    finally:
        unmount_under(mnt)
        if device:
            subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _btrfs(options: Sequence[str]) -> Iterator[DriverEnv]:
    missing = btrfs_missing()
    if missing:
        yield DriverEnv("btrfs", Path("/nonexistent"), skip=missing)
        return

    def nested(path: Path) -> None:
        _run("btrfs", "subvolume", "create", str(path))

    with btrfs_loop() as mnt:
        yield DriverEnv("btrfs", mnt, tuple(options), make_nested=nested)


def _no_devicemapper() -> str:
    from crio_plugins.storage_devicemapper.deviceset import devicemapper_missing

    return devicemapper_missing()


#: Options only skopeo and podman get. Debian's containers/storage (1.43) asks
#: udev to sync device nodes, and no udev runs in the test guest; and without
#: ``test=true`` it insists on direct-lvm settings even for loop files.
TOOL_OPTIONS = {"devicemapper": ("dm.override_udev_sync_check=true", "test=true")}


def _missing(name: str) -> str:
    if name == "overlay" and not kernel_has("overlay"):
        return "the kernel has no overlay file system"
    if name == "devicemapper":
        return _no_devicemapper()
    if name == "aufs" and not kernel_has("aufs"):
        return f"kernel {os.uname().release} has no aufs"
    return ""


@contextlib.contextmanager
def driver_env(
    name: str, root: Path | None = None, options: Sequence[str] = ()
) -> Iterator[DriverEnv]:
    """The env to run driver ``name`` in (see the module docstring).

    :param root: where to make the stores (``--driver-root``): a directory on
        the file system the driver needs; default: one this function makes.
    """
    missing = _missing(name)
    if missing:
        yield DriverEnv(name, Path("/nonexistent"), skip=missing)
    elif name == "btrfs" and root is None:
        with _btrfs(options) as env:
            yield env
    else:
        with _plain(name, root, options) as env:
            env.tool_options = TOOL_OPTIONS.get(name, ())
            yield env
