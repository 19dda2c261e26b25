"""The file systems of a container: defaults, the pod's files, CRI mounts and devices."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crio.errors import InvalidRequestError
from crio.oci.container import Device, Mount, Propagation

__all__ = [
    "DEFAULT_DEVICE_RULES",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_READONLY_PATHS",
    "MountPoint",
    "bind_mounts",
    "default_mounts",
    "device_entries",
    "host_devices",
    "mount_point_of",
    "parse_mountinfo",
    "sort_mounts",
]

DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

#: The device cgroup: deny everything, then allow the nodes every container has.
DEFAULT_DEVICE_RULES: tuple[dict[str, Any], ...] = (
    {"allow": False, "access": "rwm"},
    *(
        {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
        for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2))
    ),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
)

_PROPAGATION = {
    Propagation.PRIVATE: "rprivate",
    Propagation.HOST_TO_CONTAINER: "rslave",
    Propagation.BIDIRECTIONAL: "rshared",
}


def default_mounts(
    *, privileged: bool, shm_path: str, files_dir: str, readonly_rootfs: bool
) -> list[dict[str, Any]]:
    """/proc, /dev, /sys ... and the pod's /dev/shm, hostname, hosts and resolv.conf."""
    sys_mode = "rw" if privileged else "ro"
    files_mode = ["ro"] if readonly_rootfs else []
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", sys_mode]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", sys_mode]},
        {"destination": "/dev/shm", "type": "bind", "source": shm_path,
         "options": ["rbind", "nosuid", "noexec", "nodev"]},
    ]  # fmt: skip
    for name in ("hostname", "hosts", "resolv.conf"):
        mounts.append(
            {
                "destination": f"/etc/{name}",
                "type": "bind",
                "source": os.path.join(files_dir, name),
                "options": ["bind", "nodev", "nosuid", "noexec", *files_mode],
            }
        )
    return mounts


@dataclass(frozen=True, slots=True)
class MountPoint:
    """One line of /proc/self/mountinfo, reduced to what propagation checks need."""

    mount_point: str
    shared: bool
    slave: bool


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountPoint]:
    """The mount points of a mountinfo file with their propagation."""
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        optional = fields[6 : fields.index("-", 6)]
        points.append(
            MountPoint(
                mount_point=_unescape(fields[4]),
                shared=any(f.startswith("shared:") for f in optional),
                slave=any(f.startswith("master:") for f in optional),
            )
        )
    return points


def mount_point_of(path: str, points: Sequence[MountPoint]) -> MountPoint | None:
    """The mount that holds ``path``: the longest mount point above it, the last if stacked."""
    best: MountPoint | None = None
    best_len = -1
    for point in points:
        mp = point.mount_point
        if (mp == "/" or path == mp or path.startswith(mp + "/")) and len(mp) >= best_len:
            best, best_len = point, len(mp)
    return best


def bind_mounts(
    mounts: Iterable[Mount], mountinfo: Sequence[MountPoint] | None = None
) -> tuple[list[dict[str, Any]], str]:
    """OCI mounts for CRI mounts, and the rootfs propagation they need ("" for none).

    :param mountinfo: the host's mount table (for tests); read when needed.
    :raises InvalidRequestError: a relative container path, a missing host
        path, or a propagation the host mount cannot give, naming ``mounts[i]``.
    """
    result: list[dict[str, Any]] = []
    rootfs_propagation = ""
    for i, mount in enumerate(mounts):
        field_name = f"mounts[{i}]"
        if not mount.container_path.startswith("/"):
            raise InvalidRequestError(
                f"{field_name}.container_path: {mount.container_path!r} is not an absolute path"
            )
        if not mount.host_path:
            raise InvalidRequestError(f"{field_name}.host_path: is empty")
        try:
            source = os.path.realpath(mount.host_path, strict=True)
        except OSError as exc:
            raise InvalidRequestError(
                f"{field_name}.host_path: {mount.host_path} does not exist ({exc.strerror})"
            ) from None
        if mount.propagation is not Propagation.PRIVATE:
            if mountinfo is None:
                with open("/proc/self/mountinfo") as handle:
                    mountinfo = parse_mountinfo(handle.read())
            point = mount_point_of(source, mountinfo)
            shared = point is not None and point.shared
            slave = point is not None and point.slave
            if mount.propagation is Propagation.BIDIRECTIONAL:
                if not shared:
                    raise InvalidRequestError(
                        f"{field_name}.propagation: bidirectional needs {source} on a shared "
                        f"mount, but {point.mount_point if point else '/'} is not shared"
                    )
                rootfs_propagation = "rshared"
            else:
                if not (shared or slave):
                    raise InvalidRequestError(
                        f"{field_name}.propagation: host-to-container needs {source} on a "
                        f"shared or slave mount, but {point.mount_point if point else '/'} "
                        "is private"
                    )
                rootfs_propagation = rootfs_propagation or "rslave"
        result.append(
            {
                "destination": os.path.normpath(mount.container_path),
                "type": "bind",
                "source": source,
                "options": [
                    "rbind",
                    _PROPAGATION[mount.propagation],
                    "ro" if mount.readonly else "rw",
                ],
            }
        )
    return result, rootfs_propagation


def sort_mounts(mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Later mounts replace earlier ones at the same destination; parents come first."""
    by_destination: dict[str, dict[str, Any]] = {}
    for mount in mounts:
        by_destination.pop(mount["destination"], None)
        by_destination[mount["destination"]] = mount
    ordered = list(by_destination.values())
    return sorted(ordered, key=lambda m: len(Path(m["destination"]).parts))


def _device_entry(path: str, st: os.stat_result) -> tuple[dict[str, Any], str]:
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
    entry = {
        "path": path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": 0,
        "gid": 0,
    }
    return entry, kind


def device_entries(devices: Iterable[Device]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OCI ``linux.devices`` and their device-cgroup rules for CRI devices.

    A host path that is a directory brings every device node under it.

    :raises InvalidRequestError: a missing path, not a device, or bad permissions.
    """
    nodes: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for i, device in enumerate(devices):
        field_name = f"devices[{i}]"
        permissions = device.permissions or "rwm"
        if not set(permissions) <= set("rwm"):
            raise InvalidRequestError(
                f"{field_name}.permissions: {device.permissions!r} is not made of r, w and m"
            )
        if not device.container_path.startswith("/"):
            raise InvalidRequestError(
                f"{field_name}.container_path: {device.container_path!r} is not absolute"
            )
        try:
            st = os.stat(device.host_path)
        except OSError as exc:
            raise InvalidRequestError(
                f"{field_name}.host_path: {device.host_path} does not exist ({exc.strerror})"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            found = list(_walk_devices(device.host_path))
            if not found:
                raise InvalidRequestError(
                    f"{field_name}.host_path: directory {device.host_path} holds no devices"
                )
            pairs = [
                (os.path.join(device.container_path, os.path.relpath(p, device.host_path)), s)
                for p, s in found
            ]
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            pairs = [(device.container_path, st)]
        else:
            raise InvalidRequestError(
                f"{field_name}.host_path: {device.host_path} is not a device node"
            )
        for path, node_stat in pairs:
            entry, kind = _device_entry(path, node_stat)
            nodes.append(entry)
            rules.append(
                {
                    "allow": True,
                    "type": kind,
                    "major": entry["major"],
                    "minor": entry["minor"],
                    "access": permissions,
                }
            )
    return nodes, rules


_SKIPPED_HOST_DEVICES = {"pts", "shm", "fd", "mqueue", "console", ".lxc", ".udev"}


def _walk_devices(top: str) -> Iterable[tuple[str, os.stat_result]]:
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == top:
            dirnames[:] = [d for d in dirnames if d not in _SKIPPED_HOST_DEVICES]
        for name in filenames:
            if dirpath == top and name in _SKIPPED_HOST_DEVICES:
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                yield path, st


def host_devices() -> list[dict[str, Any]]:
    """Every device node of the host's /dev, for privileged containers."""
    return [_device_entry(path, st)[0] for path, st in _walk_devices("/dev")]
