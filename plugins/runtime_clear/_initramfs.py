"""The pod VM's initramfs: busybox, the boot modules and an ``/init`` that hands over to the agent.

``/init`` loads the modules, mounts the host root (virtiofs tag ``root``,
read-only) as the new root with fresh ``/proc``, ``/sys``, ``/dev``, ``/run``
and ``/tmp``, mounts the writable share (tag ``share``) at :data:`GUEST_SHARE`
and replaces itself with the agent (``crio.agent=`` on the kernel command
line), which runs as PID 1 on the host's python3. A failure powers the VM
off at once with the reason on the console, so the host sees a dead VM
rather than a hung one.

A template VM (:func:`build_template_initramfs`) boots from the same archive
with a second one appended: its own ``/init`` that mounts nothing from the
host and runs the agent on a python carried in the initramfs (the host's,
with just the files the agent loads), and the modules for the virtio PCI
devices hot-plugged into a restored VM.
"""

from __future__ import annotations

from collections.abc import Sequence

from crio_plugins.runtime_clear._cpio import CpioEntry, directory, file, symlink, write_newc

__all__ = [
    "AGENT_IN_INITRAMFS",
    "BOOT_MODULES",
    "GUEST_SHARE",
    "INIT_SCRIPT",
    "TEMPLATE_INIT_SCRIPT",
    "TEMPLATE_MODULES",
    "build_initramfs",
    "build_template_initramfs",
    "tree_entries",
]

#: Where the writable share appears in the guest.
GUEST_SHARE = "/run/vm/share"

#: What every pod VM loads at boot: virtio over MMIO (microvm), the agent's
#: serial port, virtiofs for the root and the share, and the pod's NIC.
BOOT_MODULES = ("virtio_mmio", "virtio_console", "virtiofs", "virtio_net")

INIT_SCRIPT = r"""#!/bin/busybox sh
# crio pod VM init (see crio_plugins.runtime_clear._initramfs)
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
agent=""
python=/usr/bin/python3
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        crio.agent=*) agent="${arg#crio.agent=}" ;;
        crio.python=*) python="${arg#crio.python=}" ;;
    esac
done
[ -n "$agent" ] || fail "no crio.agent= on the kernel command line"
mount -t virtiofs -o ro root /newroot || fail "cannot mount the host root (virtiofs tag root)"
mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run || fail "cannot mount /run"
mkdir -p /newroot@SHARE@
mount -t virtiofs share /newroot@SHARE@ || fail "cannot mount the share (virtiofs tag share)"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp /newroot/tmp || fail "cannot mount /tmp"
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev shm /newroot/dev/shm
mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup || fail "cannot mount cgroup2"
exec switch_root /newroot "$python" -I -S -B "$agent"
""".replace("@SHARE@", GUEST_SHARE)


#: What a template loads besides :data:`BOOT_MODULES`: virtio over PCI, for
#: the virtio-fs devices hot-plugged into a restored VM.
TEMPLATE_MODULES = ("virtio_pci",)
#: Where a template's initramfs keeps the agent.
AGENT_IN_INITRAMFS = "crio-agent"

TEMPLATE_INIT_SCRIPT = r"""#!/bin/busybox sh
# crio pod VM template init (see crio_plugins.runtime_clear._initramfs)
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
    echo "crio-init: $*" > /dev/ttyS0
    poweroff -f
}
for m in $(cat /lib/modules/load-order) $(cat /lib/modules/template-order); do
    insmod "/lib/modules/$m.ko" || fail "cannot load module $m"
done
exec @PYTHON@ -I -S -B /@AGENT@/agent.py --mode template
"""


def build_initramfs(busybox: bytes, modules: Sequence[tuple[str, bytes]]) -> bytes:
    """The newc archive: ``/init``, ``/bin/busybox``, ``/lib/modules/NAME.ko`` and their order.

    :param busybox: a static busybox binary.
    :param modules: ``(name, contents)`` in load order (dependencies first).
    """
    entries: list[CpioEntry] = [
        directory("bin"),
        file("bin/busybox", busybox, 0o755),
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
    entries.extend(file(f"lib/modules/{name}.ko", data) for name, data in modules)
    order = "".join(f"{name}\n" for name, _ in modules)
    entries.append(file("lib/modules/load-order", order.encode()))
    return write_newc(entries)


def tree_entries(files: Sequence[CpioEntry]) -> list[CpioEntry]:
    """``files`` (files and symlinks, any order) with every parent directory, parents first."""
    by_name: dict[str, CpioEntry] = {}
    for entry in files:
        parts = entry.name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            by_name.setdefault(parent, directory(parent))
        by_name[entry.name] = entry
    return [by_name[name] for name in sorted(by_name, key=lambda n: (n.count("/"), n))]


def build_template_initramfs(
    base: bytes,
    modules: Sequence[tuple[str, bytes]],
    python: str,
    python_files: Sequence[CpioEntry],
    agent_files: Sequence[tuple[str, bytes]],
) -> bytes:
    """A template's initramfs: ``base`` (the pod VM's), then the overlay.

    :param modules: ``(name, contents)`` loaded after the base's, in this order.
    :param python: the interpreter's path in the archive (and on the host).
    :param python_files: the interpreter, its libraries and modules, at their host paths.
    :param agent_files: ``(file name, contents)`` of the agent's modules.
    """
    script = TEMPLATE_INIT_SCRIPT.replace("@PYTHON@", python).replace("@AGENT@", AGENT_IN_INITRAMFS)
    order = "".join(f"{name}\n" for name, _ in modules)
    overlay = [
        file("init", script.encode(), 0o755),
        file("lib/modules/template-order", order.encode()),
        *(file(f"lib/modules/{name}.ko", data) for name, data in modules),
        *(file(f"{AGENT_IN_INITRAMFS}/{name}", data) for name, data in agent_files),
        *python_files,
    ]
    # The base archive made lib/ and lib/modules/ already; repeating a directory is harmless.
    return base + write_newc(tree_entries(overlay))
