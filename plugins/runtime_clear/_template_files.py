"""The files of a template's initramfs python: the host's interpreter, cut to what the agent loads.

A template VM runs the agent before any host file system is there, so its
initramfs carries the host's python: the interpreter, the shared libraries
it maps, the dynamic loader, and the standard-library modules the agent
imports (its sources and their compiled ``__pycache__`` files). Which ones
is learnt by running that python on the host exactly as the guest will
(``-I -S -B``, empty environment), importing the agent and what it loads
lazily, and listing ``sys.modules`` and ``/proc/self/maps``. The same paths
hold on the host root a restored VM moves into, so a module imported after
the move comes from the very same installation.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from crio_plugins.runtime_clear._cpio import CpioEntry, file, symlink
from crio_plugins.runtime_clear.assets import AssetsError

__all__ = ["LAZY_IMPORTS", "collect_python", "elf_interpreter"]

#: Modules the agent imports only when asked for something (a template imports them at once).
LAZY_IMPORTS = ("ctypes", "socket")

_PROBE = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import agent
for name in sys.argv[2:]:
    __import__(name)
found = set()
for module in list(sys.modules.values()):
    for attr in ("__file__", "__cached__"):
        path = getattr(module, attr, None)
        if isinstance(path, str) and os.path.isfile(path):
            found.add(os.path.abspath(path))
with open("/proc/self/maps") as maps:
    for line in maps:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            found.add(parts[5].strip())
print(json.dumps({"files": sorted(found), "executable": sys.executable}))
"""


def elf_interpreter(elf: bytes) -> str:
    """The program interpreter (``PT_INTERP``) of a 64-bit ELF executable, or ""."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return ""
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        base = phoff + index * phentsize
        (kind,) = struct.unpack_from("<I", elf, base)
        if kind == 3:  # PT_INTERP
            offset, _, _, size = struct.unpack_from("<QQQQ", elf, base + 8)
            return elf[offset : offset + size].rstrip(b"\0").decode()
    return ""


def _probe(python: str, agent_dir: Path) -> tuple[list[str], str]:
    argv = [python, "-I", "-S", "-B", "-c", _PROBE, str(agent_dir), *LAZY_IMPORTS]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env={}, check=False)
    except OSError as exc:
        raise AssetsError(f"cannot run the guest python {python}: {exc}") from exc
    if done.returncode != 0:
        raise AssetsError(f"the guest python {python} cannot load the agent: {done.stderr[-500:]}")
    found = json.loads(done.stdout)
    return list(found["files"]), str(found["executable"])


def _links_to(targets: set[str], directories: Iterable[str]) -> list[tuple[str, str]]:
    """Symlinks in ``directories`` that end at one of ``targets`` (library sonames)."""
    links = []
    for directory in sorted(set(directories)):
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_symlink() and os.path.realpath(entry.path) in targets:
                    links.append((entry.path, os.readlink(entry.path)))
    return links


def _entry(path: str) -> CpioEntry:
    info = os.stat(path)
    with open(path, "rb") as handle:
        data = handle.read()
    return file(path.lstrip("/"), data, stat.S_IMODE(info.st_mode))


def collect_python(python: str, agent_dir: Path) -> tuple[str, list[CpioEntry]]:
    """The interpreter's real path and the archive entries of everything it needs.

    :param python: the guest python (``/usr/bin/python3``).
    :param agent_dir: where the agent's modules are (they are left out: the
        initramfs has them elsewhere).
    :raises AssetsError: that python cannot run the agent here.
    """
    files, executable = _probe(python, agent_dir)
    inside = str(agent_dir.resolve()) + "/"
    real = {os.path.realpath(f) for f in files if not f.startswith(inside)}
    real.add(os.path.realpath(executable))
    entries = {path: _entry(path) for path in sorted(real)}
    libraries = {p for p in real if ".so" in os.path.basename(p)}
    links: list[tuple[str, str]] = _links_to(libraries, (os.path.dirname(p) for p in libraries))
    with open(os.path.realpath(executable), "rb") as handle:
        interpreter = elf_interpreter(handle.read(4096))
    if interpreter and interpreter not in entries:
        links.append((interpreter, os.path.realpath(interpreter)))
    if executable != os.path.realpath(executable):
        links.append((executable, os.path.realpath(executable)))
    for path, target in links:
        entries.setdefault(path, symlink(path.lstrip("/"), target))
    return os.path.realpath(executable), _without_clashes(list(entries.values()))


def _without_clashes(entries: Sequence[CpioEntry]) -> list[CpioEntry]:
    """Drop entries under a path that is itself a symlink in the list (merged-usr hosts)."""
    links = {e.name for e in entries if stat.S_ISLNK(e.mode)}
    return [e for e in entries if not any(e.name.startswith(link + "/") for link in links)]
