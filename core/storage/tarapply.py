"""What each tar member means for a layer directory: pure decisions, no I/O.

:func:`plan` turns one :class:`~crio.storage.tarstream.TarHeader` into one
operation for the applier (``crio.storage._applier``), after checking that
the member cannot reach outside the layer:

* names are relative, hold no NUL byte and no ``..`` component (a leading
  ``./`` or ``/``-free ``.`` components are fine; an absolute name is refused);
* hard-link targets obey the same rules (symlink targets may point anywhere:
  they are resolved inside the container, never by crio);
* device nodes are refused unless the policy allows them;
* ``trusted.overlay.*`` xattrs are refused (they would forge whiteouts).

Whiteouts follow the driver's :class:`~crio.storage.driver.WhiteoutFormat`:
``.wh.NAME`` deletes NAME and ``.wh..wh..opq`` makes its directory opaque
(overlay: a 0/0 character device and ``trusted.overlay.opaque=y``; vfs:
delete from the copy; aufs: kept as files). aufs' own bookkeeping
(``.wh..wh.aufs``, ``.wh..wh.plnk/...``) never enters a layer. Writes through a symlinked
parent are refused by the applier, which opens every parent with
``O_NOFOLLOW``.
"""

from __future__ import annotations

from dataclasses import dataclass

from crio.errors import InvalidRequestError
from crio.storage.driver import WhiteoutFormat
from crio.storage.tarstream import TarHeader, TarType

__all__ = [
    "OPAQUE",
    "WHITEOUT_PREFIX",
    "ApplyPolicy",
    "HostileLayerError",
    "LayerFormatError",
    "MakeDevice",
    "MakeDirectory",
    "MakeFile",
    "MakeHardlink",
    "MakeSymlink",
    "MarkOpaque",
    "Operation",
    "Skip",
    "Whiteout",
    "clean_name",
    "plan",
]

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
#: Other ``.wh..wh.`` names are aufs bookkeeping (``.wh..wh.plnk``, ``.wh..wh.aufs``).
_AUFS_META = ".wh..wh."
_AUFS_META_BYTES = _AUFS_META.encode()

Path = tuple[str, ...]


class LayerFormatError(InvalidRequestError):
    """A layer blob is not a tar archive crio can apply; the message says where."""


class HostileLayerError(LayerFormatError):
    """A layer member tries to reach outside the layer or is not allowed; names the member."""


@dataclass(frozen=True, slots=True)
class ApplyPolicy:
    """What a layer may contain."""

    whiteout_format: WhiteoutFormat
    allow_devices: bool = True


@dataclass(frozen=True, slots=True)
class MakeDirectory:
    path: Path
    header: TarHeader


@dataclass(frozen=True, slots=True)
class MakeFile:
    path: Path
    header: TarHeader


@dataclass(frozen=True, slots=True)
class MakeSymlink:
    path: Path
    target: str
    header: TarHeader


@dataclass(frozen=True, slots=True)
class MakeHardlink:
    path: Path
    target: Path
    header: TarHeader


@dataclass(frozen=True, slots=True)
class MakeDevice:
    """A character device, block device or FIFO."""

    path: Path
    header: TarHeader


@dataclass(frozen=True, slots=True)
class Whiteout:
    """Delete ``path`` (overlay: record the deletion as a 0/0 character device)."""

    path: Path
    header: TarHeader


@dataclass(frozen=True, slots=True)
class MarkOpaque:
    """Hide the lower layers' content of directory ``path``."""

    path: Path
    header: TarHeader


@dataclass(frozen=True, slots=True)
class Skip:
    """A member with no effect on this driver (aufs bookkeeping)."""

    path: Path


Operation = (
    MakeDirectory
    | MakeFile
    | MakeSymlink
    | MakeHardlink
    | MakeDevice
    | Whiteout
    | MarkOpaque
    | Skip
)


def _display(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def clean_name(name: bytes, what: str = "entry") -> Path:
    """Split a member name into safe components; ``()`` is the layer root.

    :raises HostileLayerError: NUL bytes, an absolute name or a ``..`` component.
    """
    if b"\0" in name:
        raise HostileLayerError(f"layer {what} {_display(name)!r}: name contains a NUL byte")
    if name.startswith(b"/"):
        raise HostileLayerError(f"layer {what} {_display(name)!r}: absolute path")
    parts: list[str] = []
    for raw in name.split(b"/"):
        if raw in (b"", b"."):
            continue
        if raw == b"..":
            raise HostileLayerError(f"layer {what} {_display(name)!r}: '..' escapes the layer")
        parts.append(raw.decode("utf-8", "surrogateescape"))
    return tuple(parts)


def plan(header: TarHeader, policy: ApplyPolicy) -> Operation:
    """The operation for one member.

    :raises HostileLayerError: the member is refused; the message names it.
    """
    path = clean_name(header.name)
    for key, _value in header.xattrs:
        if key.startswith("trusted.overlay."):
            raise HostileLayerError(
                f"layer entry {_display(header.name)!r}: xattr {key!r} is not allowed"
            )
    fmt = policy.whiteout_format
    base = path[-1] if path else ""
    if (
        _AUFS_META_BYTES in header.name  # cheap test first: every member passes here
        and any(p.startswith(_AUFS_META) for p in path)
        and base != OPAQUE
    ):
        return Skip(path)  # aufs bookkeeping, and anything below it, on every driver
    if base.startswith(WHITEOUT_PREFIX) and fmt is not WhiteoutFormat.AUFS:
        parent = path[:-1]
        if base == OPAQUE:
            return MarkOpaque(parent, header)
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise HostileLayerError(
                f"layer entry {_display(header.name)!r}: whiteout of {target!r}"
            )
        return Whiteout((*parent, target), header)
    kind = header.type
    if kind is TarType.REGULAR and path:  # the common case first
        return MakeFile(path, header)
    if kind is TarType.DIRECTORY:
        return MakeDirectory(path, header)
    shown = _display(header.name)
    if not path:
        raise HostileLayerError(f"layer entry {shown!r}: replaces the layer root")
    if kind is TarType.SYMLINK:
        if b"\0" in header.linkname or not header.linkname:
            raise HostileLayerError(f"layer entry {shown!r}: bad symlink target")
        return MakeSymlink(path, header.linkname.decode("utf-8", "surrogateescape"), header)
    if kind is TarType.HARDLINK:
        target = clean_name(header.linkname, what="hard link target")
        if not target:
            raise HostileLayerError(f"layer entry {shown!r}: hard link to the layer root")
        return MakeHardlink(path, target, header)
    if kind in (TarType.CHAR, TarType.BLOCK) and not policy.allow_devices:
        raise HostileLayerError(f"layer entry {shown!r}: device nodes are not allowed here")
    return MakeDevice(path, header)
