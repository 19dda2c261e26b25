"""Kernel modules: read a ``.ko``'s ``.modinfo`` and order modules by dependency.

Debian's kernel package ships the modules without ``modules.dep`` (depmod
runs at install time), so crio reads each module's ``depends=`` itself.
Pure: bytes and names in, names out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

__all__ = ["ModuleError", "dependencies", "load_order", "modinfo", "module_name"]


class ModuleError(ValueError):
    """A module file cannot be read, or a dependency is missing or circular."""


def module_name(filename: str) -> str:
    """``virtio_net`` for ``.../virtio_net.ko``; dashes and underscores are one name."""
    base = filename.rsplit("/", 1)[-1]
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def _section(elf: bytes, wanted: bytes) -> bytes:
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ModuleError("not a 64-bit little-endian ELF object")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def header(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        (name,) = struct.unpack_from("<I", elf, base)
        offset, size = struct.unpack_from("<QQ", elf, base + 0x18)
        return name, offset, size

    try:
        _, names_at, names_size = header(shstrndx)
        names = elf[names_at : names_at + names_size]
        for index in range(shnum):
            name, offset, size = header(index)
            if names[name : names.index(b"\0", name)] == wanted:
                return elf[offset : offset + size]
    except (struct.error, ValueError) as exc:
        raise ModuleError(f"corrupt ELF section table: {exc}") from exc
    raise ModuleError(f"no {wanted.decode()} section")


def modinfo(ko: bytes) -> dict[str, list[str]]:
    """The ``key=value`` strings of a module's ``.modinfo`` section, grouped by key."""
    info: dict[str, list[str]] = {}
    for raw in _section(ko, b".modinfo").split(b"\0"):
        key, sep, value = raw.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def dependencies(ko: bytes) -> tuple[str, ...]:
    """The modules ``ko`` needs loaded first (its ``depends=``)."""
    depends = modinfo(ko).get("depends", [""])[0]
    return tuple(module_name(name) for name in depends.split(",") if name)


def load_order(wanted: Iterable[str], depends: Mapping[str, Iterable[str]]) -> list[str]:
    """``wanted`` and everything they need, each after its dependencies.

    :param depends: every known module's direct dependencies.
    :raises ModuleError: a module is unknown or the dependencies form a cycle.
    """
    order: list[str] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(name: str) -> None:
        name = module_name(name)
        if name in done:
            return
        if name in visiting:
            raise ModuleError(f"module dependency cycle: {' -> '.join([*visiting, name])}")
        if name not in depends:
            needed_by = f" (needed by {visiting[-1]})" if visiting else ""
            raise ModuleError(f"module {name} is not in the kernel package{needed_by}")
        visiting.append(name)
        for dep in depends[name]:
            visit(dep)
        visiting.pop()
        done.add(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order
