"""aufs branches as data: the mount options, and whiteouts in aufs and OCI form.

Pure: strings and names in, strings and names out (the walking helpers read
directories but decide nothing on their own).

Mount data (``aufs(5)``): ``br:RW=rw:RO1=ro+wh:RO2=ro+wh...`` lists the
branches top first; ``+wh`` lets aufs honour the whiteouts that read-only
branches hold. A mount's data must fit in one page, so branches that do not
fit are added afterwards by remounts with ``append:BRANCH=ro+wh``, as
containers/storage does. ``xino=PATH`` names the external inode table file
(aufs makes and unlinks one per mount). ``plink`` (aufs' default) keeps hard
links whole across copy-ups through pseudo-links, which must be flushed into
the branch (``auplink TARGET flush``) before unmounting; without auplink the
driver mounts with ``noplink``.

Whiteouts: aufs keeps a deletion as an empty file ``.wh.NAME`` beside where
NAME was, and an opaque directory as ``.wh..wh..opq`` inside it: the same
names the OCI layer format uses, so a layer tar applies to a branch as it is
and a branch exports as a tar of its files. What differs is aufs'
bookkeeping in a branch (``.wh..wh.aufs``, ``.wh..wh.plnk/``,
``.wh..wh.orph/``), which never enters or leaves a layer.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from crio.storage.driver import Change, ChangeKind
from crio.storage.tarwrite import DirEntry, walk

__all__ = [
    "DEFAULT_XINO",
    "META_PREFIX",
    "OPAQUE",
    "WHITEOUT_PREFIX",
    "NameKind",
    "branch_changes",
    "branch_entries",
    "classify",
    "mount_data",
]

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
META_PREFIX = ".wh..wh."
DEFAULT_XINO = "/dev/shm/aufs.xino"
#: What containers/storage leaves free in the first page for its own options.
_OPTIONS_ROOM = 54


class NameKind(enum.Enum):
    """What one name in an aufs branch (or an OCI layer) stands for."""

    PLAIN = "plain"  # a file or directory of the layer
    WHITEOUT = "whiteout"  # .wh.NAME: NAME is deleted
    OPAQUE = "opaque"  # .wh..wh..opq: the lower branches' content of this directory is hidden
    META = "meta"  # aufs bookkeeping (.wh..wh.aufs, .wh..wh.plnk, .wh..wh.orph)


def classify(name: str) -> tuple[NameKind, str]:
    """Classify one path component; for a whiteout also return the deleted name.

    :raises ValueError: ``.wh.`` alone, or a whiteout of ``.`` or ``..``.
    """
    if name == OPAQUE:
        return NameKind.OPAQUE, ""
    if name.startswith(META_PREFIX):
        return NameKind.META, ""
    if name.startswith(WHITEOUT_PREFIX):
        target = name[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise ValueError(f"{name!r} whites out nothing")
        return NameKind.WHITEOUT, target
    return NameKind.PLAIN, name


def mount_data(
    rw: str,
    ro: Sequence[str],
    *,
    xino: str = DEFAULT_XINO,
    plink: bool = True,
    options: Sequence[str] = (),
    page_size: int = 4096,
) -> list[str]:
    """The mount data for a union of ``rw`` over ``ro`` (nearest first).

    :returns: the data of the first mount(2), then one ``append:`` remount
        datum for each branch that did not fit in the first page.
    """
    room = page_size - _OPTIONS_ROOM - sum(len(o) + 1 for o in options)
    branches = f"br:{rw}=rw"
    fitted = 0
    for path in ro:
        more = f":{path}=ro+wh"
        if len(branches) + len(more) > room:
            break
        branches += more
        fitted += 1
    flags = ["dio", f"xino={xino}"]
    if not plink:
        flags.append("noplink")
    first = ",".join([branches, *flags, *options])
    return [first, *(f"append:{path}=ro+wh" for path in ro[fitted:])]


def branch_entries(diff: Path) -> Iterator[DirEntry]:
    """The items of a branch in OCI form (whiteouts are already named so),
    without aufs' bookkeeping: a layer tar of the branch."""
    for rel in walk(diff):
        parts = rel.split("/")
        kinds = [classify(part)[0] for part in parts]
        if NameKind.META in kinds:
            continue
        yield DirEntry(rel)


def branch_changes(diff: Path, lowers: Sequence[Path]) -> list[Change]:
    """``kpod diff`` of a branch against the branches below it (nearest first)."""
    out: list[Change] = []
    for rel in walk(diff):
        parent, _, name = rel.rpartition("/")
        kind, target = classify(name)
        if kind is NameKind.META or any(
            classify(p)[0] is NameKind.META for p in parent.split("/") if p
        ):
            continue
        if kind is NameKind.OPAQUE:
            continue  # its directory is reported as modified or added
        if kind is NameKind.WHITEOUT:
            gone = f"{parent}/{target}" if parent else target
            out.append(Change("/" + gone, ChangeKind.DELETE))
            continue
        below = any(os.path.lexists(lower / rel) for lower in lowers)
        out.append(Change("/" + rel, ChangeKind.MODIFY if below else ChangeKind.ADD))
    out.sort(key=lambda change: change.path)
    return out
