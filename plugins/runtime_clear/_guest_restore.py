"""The guest's half of a VM restored from a template (standard library only).

A template VM boots without the host's file systems: its initramfs carries
the agent and the python it runs on, and its RAM and devices are saved once
the agent is ready. Every pod VM restored from it is that same guest, so the
``restore`` request, the first a restored agent gets, makes it this pod's:

1. the wall clock is set from the host (the guest's clock went on from the
   moment the template was saved);
2. the host's fresh entropy is credited to the kernel's pool and the CRNG is
   reseeded at once (``RNDADDENTROPY`` then ``RNDRESEEDCRNG``), so no two
   pods share random numbers; what the kernel makes lazily (``boot_id``,
   network hash secrets) is first made after this point;
3. the host root and the pod's share, hot-plugged by the supervisor as
   virtio-fs PCI devices once the restore was done (vhost-user-fs cannot be
   migrated), are mounted as a cold boot's init mounts them, and the agent
   moves into the new root;
4. the pod's NICs, hot-plugged as virtio-net PCI devices with the pod's
   MACs, are waited for (the ``network`` request configures them);
5. a machine-id of its own is bound over ``/etc/machine-id``, and the
   hostname is set.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import struct
import time

from _guest_loop import Failure, read_text

# No typing at run time: the guest imports this module while it boots.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["Restore", "reseed", "switch_root", "wait_for_nics"]

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_MOVE = 8192
NEW_ROOT = "/newroot"
#: How often a mount of a hot-plugged virtio-fs tag is tried until it appears.
MOUNT_RETRY = 0.005


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> int:
    """mount(2); 0 or the errno."""
    import ctypes  # imported by the template before its RAM was saved: free here

    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.mount(
        source.encode(),
        target.encode(),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    return ctypes.get_errno() if result != 0 else 0


def _must_mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    err = _mount(source, target, fstype, flags, data)
    if err:
        raise Failure("failed", f"mount {source} on {target}: {os.strerror(err)}")


def reseed(entropy: bytes) -> None:
    """Credit ``entropy`` to the input pool and reseed the CRNG from it now."""
    if len(entropy) < 32:
        raise Failure("invalid", f"restore: {len(entropy)} bytes of entropy, expected 32 or more")
    fd = os.open("/dev/urandom", os.O_WRONLY | os.O_CLOEXEC)
    try:
        info = struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy
        fcntl.ioctl(fd, RNDADDENTROPY, info)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)


def wait_for_nics(macs: list[str], deadline: float) -> list[str]:
    """The names of the hot-plugged NICs with these MACs, once they all appeared."""
    wanted = {mac.lower() for mac in macs}
    while True:
        found = {}
        for name in os.listdir("/sys/class/net"):
            try:
                found[read_text(f"/sys/class/net/{name}/address").strip().lower()] = name
            except OSError:
                continue
        if wanted <= set(found):
            return [found[mac.lower()] for mac in macs]
        if time.monotonic() > deadline:
            missing = sorted(wanted - set(found))
            raise Failure("not_found", f"restore: no NIC with MAC {', '.join(missing)} appeared")
        time.sleep(MOUNT_RETRY)


def _mount_hotplugged(tag: str, target: str, flags: int, deadline: float) -> None:
    """Mount virtio-fs ``tag``, waiting for its hot-plugged device to appear."""
    while True:
        err = _mount(tag, target, "virtiofs", flags)
        if not err:
            return
        # EINVAL: no device has this tag (yet); ENODEV: no virtiofs yet.
        if err not in (errno.EINVAL, errno.ENODEV) or time.monotonic() > deadline:
            raise Failure("failed", f"restore: mount virtio-fs {tag}: {os.strerror(err)}")
        time.sleep(MOUNT_RETRY)


def switch_root(share_dir: str, deadline: float) -> None:
    """Mount the host root and the share as a cold boot's init does; move into it."""
    new = NEW_ROOT
    _mount_hotplugged("root", new, MS_RDONLY, deadline)
    _must_mount("run", f"{new}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    os.makedirs(f"{new}{share_dir}", exist_ok=True)
    _mount_hotplugged("share", f"{new}{share_dir}", 0, deadline)
    _must_mount("tmp", f"{new}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path in ("/dev", "/proc", "/sys"):
        _must_mount(path, f"{new}{path}", None, MS_MOVE)
    for path in ("/dev/pts", "/dev/shm"):
        os.makedirs(f"{new}{path}", exist_ok=True)
    _must_mount("devpts", f"{new}/dev/pts", "devpts", 0, "gid=5,mode=0620,ptmxmode=0666")
    _must_mount("shm", f"{new}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _must_mount("cgroup2", f"{new}/sys/fs/cgroup", "cgroup2", 0, "nsdelegate")
    os.chdir(new)
    _must_mount(".", "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def set_machine_id(machine_id: str) -> None:
    if len(machine_id) != 32 or any(c not in "0123456789abcdef" for c in machine_id):
        raise Failure("invalid", f"restore: machine_id {machine_id!r} is not 32 hex digits")
    with open("/run/machine-id", "w") as handle:
        handle.write(machine_id + "\n")
    if os.path.exists("/etc/machine-id"):
        _must_mount("/run/machine-id", "/etc/machine-id", None, MS_BIND)


class Restore:
    """The ``restore`` op of a template's agent (refused by a cold-booted one)."""

    def __init__(self, template: bool, after_switch: Callable[[], None]) -> None:
        self.template = template
        self.restored = False
        self.after_switch = after_switch

    def op_restore(self, rid: int, args: dict[str, Any]) -> dict[str, Any]:
        if not self.template:
            raise Failure("state", "restore: this VM was booted, not made from a template")
        if self.restored:
            raise Failure("state", "restore: this VM was restored already")
        started = time.monotonic()
        time.clock_settime_ns(time.CLOCK_REALTIME, args["time_ns"])
        try:
            entropy = base64.b64decode(args["entropy"], validate=True)
        except ValueError as exc:
            raise Failure("invalid", f"restore: entropy: {exc}") from None
        reseed(entropy)
        self.restored = True  # from here on, a failure leaves a half-made guest
        deadline = time.monotonic() + float(args.get("timeout", 60))
        switch_root(args["share_dir"], deadline)
        devices = wait_for_nics([str(mac) for mac in args.get("macs", [])], deadline)
        set_machine_id(args["machine_id"])
        if args.get("hostname"):
            with open("/proc/sys/kernel/hostname", "w") as handle:
                handle.write(args["hostname"])
        self.after_switch()
        return {
            "kernel": os.uname().release,
            "pid": os.getpid(),
            "uptime": float(read_text("/proc/uptime").split()[0]),
            "nics": devices,
            "restore_seconds": round(time.monotonic() - started, 4),
        }
