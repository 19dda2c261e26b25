"""A Debian 12 node with systemd as PID 1, in a qemu guest of the VM harness.

This host has no systemd as PID 1, so the tests of crio as a systemd
service (its unit, ``sd_notify``, the systemd cgroup manager over D-Bus,
journald) run in a guest built here from Debian's packages:

1. ``mmdebstrap`` makes a minimal bookworm root with systemd, dbus, runc,
   crun, conmon, the CNI plugins, iptables and python3 (and python3-venv,
   for ``make install``);
2. the pod VM kernel's module tree (``crio vm-assets``) goes into
   ``/lib/modules``, so the guest's udev and modprobe find overlay, bridge
   and netfilter modules;
3. wheels of crio's dependencies for the guest's python go into
   ``/var/cache/crio-wheels``, and a venv at ``/usr/local/lib/crio`` gets
   them installed (the guest has no network, and pip under TCG is slow:
   ``make install`` in the guest reuses the venv and adds crio itself);
4. a unit starts the VM harness's agent on the virtio serial port early in
   boot, so the host runs commands in the guest as in a pod VM;
5. the tree becomes an ext4 disk image, booted read-only from the host's
   point of view (qemu ``snapshot=on``: every boot starts from the image).

An initramfs of its own loads the disk, virtiofs and serial drivers, mounts
the disk as the root, the harness's share at ``/run/vm/share`` and the
host's root (read-only) at ``/host``, and hands over to ``/sbin/init``.

The result is stored like ``crio vm-assets`` stores its kernel: in a
directory named after the digest of everything it is built from, with a
manifest of sha256 sums; a second :func:`ensure` with the same inputs only
reads the manifest. ``python -m support.systemd_guest`` (``make
systemd-guest``) builds it ahead of the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GUEST_PACKAGES",
    "GuestImage",
    "GuestImageError",
    "ensure",
    "load",
    "vm_spec",
]

REPO = Path(__file__).resolve().parents[2]
#: Where the images live (override with CRIO_TEST_SYSTEMD_GUEST).
DEFAULT_DIR = Path(os.environ.get("CRIO_TEST_SYSTEMD_GUEST", "/var/tmp/crio-test/systemd-guest"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
GUEST_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "udev", "kmod", "procps", "iproute2", "iptables",
    "python3", "python3-venv", "make", "runc", "crun", "conmon", "containernetworking-plugins",
)  # fmt: skip
#: Bumped when what the build does changes in a way the inputs do not show.
LAYOUT = 2
DISK_BYTES = 4 << 30
#: Where the guest finds the wheels of crio's dependencies.
GUEST_WHEELS = "/var/cache/crio-wheels"
#: The venv ``make install`` uses, made in the image with crio's dependencies in it:
#: under TCG, making it and installing two dozen wheels takes minutes, in the image
#: build seconds. ``make install`` then adds crio itself from the checkout.
VENV = "/usr/local/lib/crio"
#: What ``make install`` is given in the guest (no network there; setuptools is in the venv).
PIP_INSTALL_FLAGS = f"--no-index --find-links {GUEST_WHEELS} --no-build-isolation --no-compile"
#: The harness's share, as the pod VM initramfs mounts it.
GUEST_SHARE = "/run/vm/share"
#: Modules the initramfs loads: the disk, the agent's port, the shares.
BOOT_MODULES = ("virtio_mmio", "virtio_blk", "virtio_console", "virtiofs")
#: What a test node does without: udev (devtmpfs makes the nodes, the kernel loads
#: modules on demand), gettys, timers, and set-up units that cost seconds under TCG.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
    "e2scrub_reap.service", "getty@tty1.service", "serial-getty@ttyS0.service",
    "systemd-timesyncd.service", "systemd-udevd.service", "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket", "systemd-udev-trigger.service", "systemd-udev-settle.service",
    "modprobe@.service", "dev-hugepages.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-kernel-config.mount", "sys-fs-fuse-connections.mount",
    "proc-sys-fs-binfmt_misc.automount", "systemd-binfmt.service", "kmod-static-nodes.service",
    "systemd-random-seed.service", "systemd-pstore.service", "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service", "systemd-journal-flush.service",
    "systemd-remount-fs.service", "systemd-firstboot.service", "systemd-logind.service",
    "systemd-modules-load.service", "systemd-sysctl.service", "systemd-hwdb-update.service",
    "ldconfig.service", "systemd-journal-catalog-update.service",
)  # fmt: skip

INIT_SCRIPT = r"""#!/bin/busybox sh
# crio systemd test node init (see tests/support/systemd_guest.py)
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
    echo "crio-init: $*" > /dev/ttyS0
    poweroff -f
}
for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || fail "cannot load module $m"
done
n=0
while [ ! -b /dev/vda ]; do
    n=$((n + 1))
    [ "$n" -lt 1000 ] || fail "no /dev/vda"
    sleep 0.01
done
mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "cannot mount /dev/vda"
mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run || fail "cannot mount /run"
mkdir -p /newroot@SHARE@ /newroot/host
mount -t virtiofs share /newroot@SHARE@ || fail "cannot mount the share"
mount -t virtiofs -o ro root /newroot/host || fail "cannot mount the host root"
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
""".replace("@SHARE@", GUEST_SHARE)

AGENT_UNIT = f"""[Unit]
Description=The VM harness's agent (host commands over virtio serial)
DefaultDependencies=no
After=systemd-journald.socket

[Service]
ExecStart=/usr/bin/python3 -I -S -B {GUEST_SHARE}/.agent/agent.py
KillMode=process

[Install]
WantedBy=sysinit.target
"""


class GuestImageError(Exception):
    """The guest image cannot be built or trusted; the message says which step."""


@dataclass(frozen=True, slots=True)
class GuestImage:
    directory: Path
    disk: Path
    initrd: Path
    kernel: Path
    kernel_release: str


def _run(argv: list[str], **kwargs: object) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise GuestImageError(f"{argv[0]} is not installed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise GuestImageError(f"{' '.join(argv[:4])} ... failed ({done.returncode}): {tail}")
    return str(done.stdout)


def requirements() -> list[str]:
    """crio's run-time dependencies (pyproject.toml), plus what building its wheel needs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    build = project["build-system"]["requires"]
    return sorted([*project["project"]["dependencies"], *build])


def _inputs(assets: object) -> str:
    digest = hashlib.sha256()
    busybox = Path("/bin/busybox").read_bytes()
    for part in (
        str(LAYOUT), SUITE, MIRROR, ",".join(GUEST_PACKAGES), INIT_SCRIPT, AGENT_UNIT,
        ",".join(BOOT_MODULES), ",".join(MASKED_UNITS), "\n".join(requirements()),
        str(getattr(assets, "kernel_release", "")), json.dumps(getattr(assets, "sha256", {})),
        str(DISK_BYTES),
    ):  # fmt: skip
        digest.update(part.encode() + b"\0")
    digest.update(hashlib.sha256(busybox).digest())
    return digest.hexdigest()


def load(directory: Path) -> GuestImage:
    """The image stored in ``directory`` (cheap: reads the manifest, checks sizes)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise GuestImageError(f"no guest image in {directory}: {exc}") from exc
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != entry["size"]:
            raise GuestImageError(f"{path} is missing or not the size its manifest says")
    return GuestImage(
        directory=directory,
        disk=directory / "disk.img",
        initrd=directory / "initrd.img",
        kernel=Path(manifest["kernel"]),
        kernel_release=manifest["kernel_release"],
    )


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure(
    assets: object, base: Path = DEFAULT_DIR, say: Callable[[str], None] = print
) -> GuestImage:
    """The image for these inputs, built if it is not stored yet.

    :param assets: the pod VM assets (``crio_plugins.runtime_clear.assets.Assets``):
        their kernel boots the guest and their module tree goes into it.
    """
    inputs = _inputs(assets)
    directory = base / inputs[:16]
    with _locked(base):
        with contextlib.suppress(GuestImageError):
            found = load(directory)
            if found.kernel == Path(str(getattr(assets, "kernel"))):  # noqa: B009
                say(f"systemd guest image in {directory} is current")
                return found
        started = time.monotonic()
        work = base / f".build-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            _build(work, assets, inputs, say)
            shutil.rmtree(directory, ignore_errors=True)
            (work / "out").rename(directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for old in base.iterdir():  # earlier inputs: not used again
            if old.is_dir() and old != directory and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        say(f"systemd guest image stored in {directory} in {time.monotonic() - started:.0f}s")
        return load(directory)


def _build(work: Path, assets: object, inputs: str, say: Callable[[str], None]) -> None:
    rootfs, out = work / "rootfs", work / "out"
    out.mkdir()
    say("downloading the wheels of crio's dependencies for the guest")
    _wheels(work / "wheels")
    say(f"mmdebstrap {SUITE}: {' '.join(GUEST_PACKAGES)}, and crio's dependencies in {VENV}")
    pip = f"{VENV}/bin/pip install -q --no-index --find-links {GUEST_WHEELS}"
    _run([
        "mmdebstrap", "--variant=minbase", "--include=" + ",".join(GUEST_PACKAGES),
        f'--customize-hook=mkdir -p "$1{GUEST_WHEELS}"',
        f"--customize-hook=sync-in {work / 'wheels'} {GUEST_WHEELS}",
        f'--customize-hook=chroot "$1" python3 -m venv {VENV}',
        f'--customize-hook=chroot "$1" {pip} {" ".join(map(shlex.quote, requirements()))}',
        SUITE, str(rootfs), MIRROR,
    ])  # fmt: skip
    release = str(getattr(assets, "kernel_release"))  # noqa: B009
    modules = Path(str(getattr(assets, "modules_dir")))  # noqa: B009
    say(f"adding the modules of {release}")
    shutil.copytree(modules / release, rootfs / "lib/modules" / release, symlinks=True)
    _run(["depmod", "-b", str(rootfs), release])
    _customize(rootfs)
    say("making the ext4 disk image")
    disk = out / "disk.img"
    with open(disk, "wb") as handle:
        handle.truncate(DISK_BYTES)
    _run(["mkfs.ext4", "-q", "-F", "-L", "crio-node", "-d", str(rootfs), str(disk)])
    (out / "initrd.img").write_bytes(_initramfs(assets))
    manifest = {
        "layout": LAYOUT,
        "inputs": inputs,
        "kernel": str(getattr(assets, "kernel")),  # noqa: B009
        "kernel_release": release,
        "packages": _run(["chroot", str(rootfs), "dpkg-query", "-W"]).splitlines(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {
            name: {"size": (out / name).stat().st_size, "sha256": _sha256(out / name)}
            for name in ("disk.img", "initrd.img")
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _wheels(target: Path) -> None:
    """Binary wheels of crio's dependencies for the guest's CPython 3.11 (no compiler there)."""
    target.mkdir(parents=True, exist_ok=True)
    _run([
        sys.executable, "-m", "pip", "download", "-q", "--dest", str(target),
        "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
        "--platform", "linux_x86_64", *requirements(),
    ])  # fmt: skip


def _customize(rootfs: Path) -> None:
    (rootfs / "etc/hostname").write_text("crio-node\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 crio-node\n")
    units = rootfs / "etc/systemd/system"
    (units / "crio-test-agent.service").write_text(AGENT_UNIT)
    wants = units / "sysinit.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / "crio-test-agent.service").symlink_to("../crio-test-agent.service")
    for unit in MASKED_UNITS:
        link = units / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (rootfs / "etc/machine-id").write_text("")  # a fresh id each boot
    (rootfs / "etc/fstab").write_text("# the initramfs mounts the root read-write\n")
    journald = rootfs / "etc/systemd/journald.conf.d"
    journald.mkdir(parents=True, exist_ok=True)
    (journald / "crio-test.conf").write_text("[Journal]\nStorage=volatile\n")
    for name in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(rootfs / name, ignore_errors=True)
        (rootfs / name).mkdir(parents=True, exist_ok=True)


def _initramfs(assets: object) -> bytes:
    from crio_plugins.runtime_clear._cpio import CpioEntry, directory, file, symlink, write_newc
    from crio_plugins.runtime_clear._modules import load_order

    modules_dir = Path(str(getattr(assets, "modules_dir")))  # noqa: B009
    release = str(getattr(assets, "kernel_release"))  # noqa: B009
    index = json.loads((modules_dir / "modules.json").read_text())
    depends = {name: entry["depends"] for name, entry in index.items()}
    order = load_order(BOOT_MODULES, depends)
    entries: list[CpioEntry] = [
        directory("bin"),
        file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755),
        symlink("bin/sh", "busybox"),
        directory("dev"),
        CpioEntry("dev/console", 0o020600, rdev=(5, 1)),
        directory("lib"),
        directory("lib/modules"),
        directory("newroot"),
        directory("proc"),
        directory("sys"),
        file("init", INIT_SCRIPT.encode(), 0o755),
    ]
    for name in order:
        data = (modules_dir / release / index[name]["path"]).read_bytes()
        entries.append(file(f"lib/modules/{name}.ko", data))
    entries.append(file("lib/modules/load-order", "".join(f"{n}\n" for n in order).encode()))
    return write_newc(entries)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def vm_spec(image: GuestImage, run_dir: Path, memory_mib: int = 1536, vcpus: int = 2) -> object:
    """A VMSpec that boots this image: its disk (copy-on-write), its initramfs, systemd."""
    from crio_plugins.runtime_clear.vm import VMSpec

    return VMSpec(
        run_dir=run_dir,
        kernel=image.kernel,
        initrd=image.initrd,
        memory_mib=memory_mib,
        vcpus=vcpus,
        kernel_args=("systemd.show_status=false", "rw"),
        qemu_args=(
            "-drive",
            f"file={image.disk},if=none,id=root,format=raw,snapshot=on",
            "-device",
            "virtio-blk-device,drive=root",
        ),
    )


def main() -> int:
    """Build (or find) the image for the installed or test VM assets."""
    from crio.errors import CrioError
    from crio_plugins.runtime_clear import assets as vm_assets
    from support.vm import INSTALLED_ASSETS, TEST_ASSETS

    for directory in (INSTALLED_ASSETS, TEST_ASSETS):
        try:
            found = vm_assets.load(directory)
            break
        except CrioError:
            continue
    else:
        found = vm_assets.ensure(TEST_ASSETS)
    ensure(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
