"""What the agent changes in a container's config.json: devices, and the process of an exec.

Device nodes are the guest's, never the host's. Core builds
``linux.devices`` from the host: a privileged container gets every node of
the host's /dev (the host side drops those, see ``_spec``), a CRI
``devices`` entry gets the host node's type and numbers. In a pod VM the
container runs on the guest's kernel, so:

- a privileged container gets every node of the *guest's* /dev (what runc
  gives it on its host), with the same rules of what to skip as core's;
- a requested device is kept when the guest has a node of the same type
  and numbers (the standard numbers are the kernel's ABI: null, fuse, loop,
  tun ...); one that the guest lacks is refused by name rather than made as
  a node no driver answers.

An exec runs as the container's own process does (user, groups,
capabilities, no_new_privs, rlimits, environment), as runc's path gives it
(``runc exec --process``).

Standard library only and pure but for reading /dev (the agent imports it
while the guest boots; the host's tests import it as a plain module).
"""

from __future__ import annotations

import os
import stat

# No typing at run time: the guest imports this module while it boots.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = ["MissingDeviceError", "exec_process", "guest_devices", "with_guest_devices"]

#: Entries of /dev that are not a privileged container's to have (as core's host list).
SKIPPED = {"pts", "shm", "fd", "mqueue", "console", ".lxc", ".udev"}


class MissingDeviceError(Exception):
    """A requested device has no node with its type and numbers in the guest."""


def _walk(top: str) -> Iterable[tuple[str, os.stat_result]]:
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == top:
            dirnames[:] = [d for d in dirnames if d not in SKIPPED]
        for name in filenames:
            if dirpath == top and name in SKIPPED:
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                yield path, st


def guest_devices(top: str = "/dev") -> list[dict[str, Any]]:
    """Every device node under ``top`` as an OCI ``linux.devices`` entry (paths as in /dev)."""
    out = []
    for path, st in _walk(top):
        out.append(
            {
                "path": "/dev" + path[len(top) :],
                "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                "major": os.major(st.st_rdev),
                "minor": os.minor(st.st_rdev),
                "fileMode": stat.S_IMODE(st.st_mode),
                "uid": 0,
                "gid": 0,
            }
        )
    return out


def _key(entry: dict[str, Any]) -> tuple[str, int, int]:
    return str(entry.get("type")), int(entry.get("major", -1)), int(entry.get("minor", -1))


def with_guest_devices(
    spec: dict[str, Any], all_of_them: bool, available: list[dict[str, Any]]
) -> dict[str, Any]:
    """``spec`` (changed in place and returned) with the devices the guest gives.

    :param all_of_them: a privileged container: every node of ``available``
        comes first (as core puts the host's first), then what it asked for.
    :param available: the guest's device nodes (:func:`guest_devices`).
    :raises MissingDeviceError: naming the first requested device the guest lacks.
    """
    linux = spec.setdefault("linux", {})
    have = {_key(entry) for entry in available}
    requested = list(linux.get("devices") or [])
    for entry in requested:
        if _key(entry) not in have:
            kind, major, minor = _key(entry)
            raise MissingDeviceError(
                f"device {entry.get('path')} ({kind} {major}:{minor}) does not exist in the pod VM"
            )
    devices = requested
    if all_of_them:
        asked = {entry.get("path") for entry in requested}
        devices = [e for e in available if e["path"] not in asked] + requested
    if devices:
        linux["devices"] = devices
    else:
        linux.pop("devices", None)
    return spec


def exec_process(
    base: dict[str, Any], argv: list[str], tty: bool, env: list[str], cwd: str | None
) -> dict[str, Any]:
    """The OCI process of an exec: the container's own, with this command and terminal.

    :param base: the container's ``process`` from its config.json.
    :param env: extra ``NAME=value`` items; they replace same-named ones.
    :param cwd: a working directory of the exec's own, if any.
    """
    process = dict(base)
    process["args"] = list(argv)
    process["terminal"] = tty
    if env:
        names = {item.partition("=")[0] for item in env}
        kept = [item for item in process.get("env", []) if item.partition("=")[0] not in names]
        process["env"] = kept + list(env)
    if cwd:
        process["cwd"] = cwd
    process.pop("consoleSize", None)
    return process
