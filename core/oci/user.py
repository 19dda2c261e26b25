"""Who a container's process runs as: CRI's user settings against the image's files.

The image's /etc/passwd and /etc/group are read through :func:`secure_join`,
which resolves symbolic links as if the rootfs were ``/``: a hostile image
cannot make crio read a host file.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from crio.errors import InvalidRequestError
from crio.oci.container import SecurityContext

__all__ = [
    "GroupEntry",
    "PasswdEntry",
    "ProcessUser",
    "parse_group",
    "parse_passwd",
    "resolve_user",
    "secure_join",
]

_MAX_LINKS = 255


def secure_join(root: Path, unsafe: str) -> Path:
    """``root`` joined with ``unsafe``, resolving symlinks inside ``root`` only.

    ``..`` and absolute symlink targets never leave ``root``; components that
    do not exist are joined as they are.
    """
    parts = deque(unsafe.split("/"))
    current: list[str] = []
    links = 0
    while parts:
        part = parts.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = os.path.join(root, *current, part)
        try:
            mode = os.lstat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            current.append(part)
            continue
        if not stat.S_ISLNK(mode):
            current.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise InvalidRequestError(f"too many symbolic links resolving {unsafe!r} in {root}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            current = []
        parts.extendleft(reversed(target.split("/")))
    return Path(root, *current)


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True, slots=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Entries of an /etc/passwd file; malformed lines are skipped, as libc does."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or line.startswith("#"):
            continue
        try:
            entries.append(PasswdEntry(fields[0], int(fields[2]), int(fields[3]), fields[5]))
        except ValueError:
            continue
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """Entries of an /etc/group file; malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or line.startswith("#"):
            continue
        try:
            members = tuple(m for m in fields[3].split(",") if m)
            entries.append(GroupEntry(fields[0], int(fields[2]), members))
        except ValueError:
            continue
    return entries


@dataclass(frozen=True, slots=True)
class ProcessUser:
    """The OCI ``process.user`` and the HOME it implies."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _read(rootfs: Path, path: str) -> str:
    try:
        target = secure_join(rootfs, path)
        if not target.is_file():
            return ""
        with open(target, "rb") as handle:
            return handle.read(4 << 20).decode("utf-8", "replace")
    except OSError:
        return ""


def _id(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def resolve_user(rootfs: Path, image_user: str, security: SecurityContext) -> ProcessUser:
    """Resolve the container's user, group and supplementary groups.

    Order as in CRI-O: ``run_as_user`` or ``run_as_username`` from the
    request, else the image's ``User`` ("name", "uid", "name:group",
    "uid:gid"); ``run_as_group`` overrides the group; the groups of the image's
    /etc/group that list the user, and the request's ``supplemental_groups``,
    become the additional groups.

    :raises InvalidRequestError: an unknown user or group name, naming its source.
    """
    if security.run_as_group is not None and not (
        security.run_as_user is not None or security.run_as_username
    ):
        raise InvalidRequestError(
            "linux.security_context.run_as_group: only valid together with "
            "run_as_user or run_as_username"
        )
    passwd = parse_passwd(_read(rootfs, "/etc/passwd"))
    groups = parse_group(_read(rootfs, "/etc/group"))
    group_part = ""
    entry: PasswdEntry | None = None
    if security.run_as_user is not None:
        uid = security.run_as_user
        if uid < 0:
            raise InvalidRequestError("linux.security_context.run_as_user: must not be negative")
        entry = next((e for e in passwd if e.uid == uid), None)
    elif security.run_as_username:
        name = security.run_as_username
        entry = _by_name_or_id(passwd, name)
        if entry is None:
            raise InvalidRequestError(
                f"linux.security_context.run_as_username: user {name!r} "
                "is not in the image's /etc/passwd"
            )
        uid = entry.uid
    else:
        user_part, _, group_part = image_user.partition(":")
        if not user_part:
            uid = 0
            entry = next((e for e in passwd if e.uid == 0), None)
        else:
            entry = _by_name_or_id(passwd, user_part)
            numeric = _id(user_part)
            if entry is None and numeric is None:
                raise InvalidRequestError(
                    f"image config User: user {user_part!r} is not in the image's /etc/passwd"
                )
            uid = entry.uid if entry is not None else numeric  # type: ignore[assignment]
    if security.run_as_group is not None:
        if security.run_as_group < 0:
            raise InvalidRequestError("linux.security_context.run_as_group: must not be negative")
        gid = security.run_as_group
    elif group_part:
        group = next((g for g in groups if g.name == group_part), None)
        numeric = _id(group_part)
        if group is None and numeric is None:
            raise InvalidRequestError(
                f"image config User: group {group_part!r} is not in the image's /etc/group"
            )
        gid = group.gid if group is not None else numeric  # type: ignore[assignment]
    else:
        gid = entry.gid if entry is not None else 0
    extra: list[int] = []
    if entry is not None:
        extra.extend(g.gid for g in groups if entry.name in g.members)
    for value in security.supplemental_groups:
        if value < 0:
            raise InvalidRequestError(
                "linux.security_context.supplemental_groups: must not be negative"
            )
        extra.append(value)
    additional = tuple(dict.fromkeys(g for g in extra if g != gid))
    return ProcessUser(
        uid, gid, additional, entry.home if entry is not None and entry.home else "/"
    )


def _by_name_or_id(passwd: list[PasswdEntry], text: str) -> PasswdEntry | None:
    entry = next((e for e in passwd if e.name == text), None)
    if entry is None and text.isdigit():
        entry = next((e for e in passwd if e.uid == int(text)), None)
    return entry
