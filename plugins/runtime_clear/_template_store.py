"""Where saved templates are kept, and the locks that say who uses them (blocking I/O).

One directory (a handler's ``template_dir``) holds templates by key::

    KEY/             a saved template: MARKER, initrd.img, memory, state, template.json
    KEY.lock         share-locked by every crio that uses KEY, for as long as it runs
    KEY.build.lock   locked by the one crio building KEY
    KEY.build-PID/   that build, until it is complete and renamed to KEY/

Several crio processes may share the directory (tests do): the first to
need a key builds it while the others wait, and a crio removes a template of
another key only when nobody holds its locks (a killed crio's locks go with
it). Only entries that carry :data:`MARKER` (or are its lock files) are
removed: positive evidence that crio made them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = [
    "KEY_LENGTH",
    "MARKER",
    "build_dir",
    "clean",
    "clean_builds",
    "directory",
    "facts",
    "install",
    "lock_build",
    "use",
]

#: In every template directory from its creation: positive evidence it is crio's.
MARKER = "crio-template"
#: The part of the key that names a template's files (hex digits).
KEY_LENGTH = 24
FACTS = "template.json"


def _name(key: str) -> str:
    name = key[:KEY_LENGTH]
    if len(name) != KEY_LENGTH or any(c not in "0123456789abcdef" for c in name):
        raise ValueError(f"template key {key!r} is not a sha256 in hex")
    return name


def directory(root: Path, key: str) -> Path:
    return root / _name(key)


def _open_locked(path: Path, how: int) -> int:
    """An fd of ``path`` locked with ``how``; the file is created if missing.

    Reopened if the file was replaced while we waited (a cleaner removed it),
    so the lock held is always on the file the path names.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, how)
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def use(root: Path, key: str) -> int:
    """Mark ``key`` as in use by this process (until the fd is closed); the fd."""
    root.mkdir(parents=True, exist_ok=True)
    return _open_locked(root / f"{_name(key)}.lock", fcntl.LOCK_SH)


def lock_build(root: Path, key: str) -> int:
    """Take the build lock of ``key``, waiting for another builder; the fd to close.

    The builds of ``key`` left in ``root`` are stale once we hold it (their
    builders died): they are removed.
    """
    root.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(root / f"{_name(key)}.build.lock", fcntl.LOCK_EX)
    for stale in root.glob(f"{_name(key)}.build-*"):
        if (stale / MARKER).is_file():
            shutil.rmtree(stale, ignore_errors=True)
    return fd


def clean_builds(root: Path, key: str) -> list[str]:
    """Remove what killed builds of ``key`` left, unless a build is going on."""
    fd = _try_exclusive(root / f"{_name(key)}.build.lock")
    if fd < 0:
        return []
    removed = []
    try:
        for stale in sorted(root.glob(f"{_name(key)}.build-*")):
            if (stale / MARKER).is_file():
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(f"VM template build {stale}")
    finally:
        os.close(fd)
    return removed


def build_dir(root: Path, key: str) -> Path:
    """A fresh directory to build ``key`` in (call while holding :func:`lock_build`)."""
    work = root / f"{_name(key)}.build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / MARKER).write_text("a pod VM template being built by crio\n")
    return work


def install(work: Path, root: Path, key: str, facts: dict[str, Any]) -> Path:
    """Make a finished build the template of ``key`` (call while holding :func:`lock_build`)."""
    (work / FACTS).write_text(json.dumps(facts, indent=1))
    target = directory(root, key)
    if target.exists():
        shutil.rmtree(target)
    work.rename(target)
    return target


def facts(root: Path, key: str, files: tuple[str, ...]) -> dict[str, Any] | None:
    """The facts of the complete template of ``key``, or None."""
    target = directory(root, key)
    try:
        found = json.loads((target / FACTS).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("key") != key or not (target / MARKER).is_file():
        return None
    if not all((target / name).is_file() for name in files):
        return None
    return found


def _try_exclusive(path: Path) -> int:
    """An fd holding ``path`` exclusively, or -1 when someone holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    return fd


def clean(root: Path, keep: str) -> list[str]:
    """Remove the templates (and builds) of other keys than ``keep`` that nobody uses."""
    if not root.is_dir():
        return []
    kept = _name(keep)
    names = {p.name.split(".", 1)[0] for p in root.iterdir() if len(p.name) >= KEY_LENGTH}
    removed = []
    for name in sorted(names - {kept}):
        if len(name) != KEY_LENGTH or any(c not in "0123456789abcdef" for c in name):
            continue
        held = [_try_exclusive(root / f"{name}{suffix}") for suffix in (".lock", ".build.lock")]
        try:
            if any(fd < 0 and (root / f"{name}{suffix}").exists()
                   for fd, suffix in zip(held, (".lock", ".build.lock"), strict=True)):  # fmt: skip
                continue  # in use, or being built
            for path in sorted(root.glob(f"{name}*")):
                if path.is_dir() and (path / MARKER).is_file():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(f"VM template {path}")
            for suffix in (".lock", ".build.lock"):
                (root / f"{name}{suffix}").unlink(missing_ok=True)
        finally:
            for fd in held:
                if fd >= 0:
                    os.close(fd)
    return removed
