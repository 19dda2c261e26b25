"""OCI hooks from ``hooks_dir``: the ``oci-hooks(5)`` JSON files (schema 1.0.0).

Each ``*.json`` file in a hooks directory names one hook (an OCI runtime-spec
hook entry: ``path``, ``args``, ``env``, ``timeout``), the ``stages`` it is
injected into, and ``when`` it applies::

    {"version": "1.0.0",
     "hook": {"path": "/usr/libexec/oci/hooks.d/oci-umount", "args": ["oci-umount", "-d"]},
     "when": {"hasBindMounts": true},
     "stages": ["prestart"]}

The rules, as containers/common applies them (``oci-hooks(5)``):

- a file in a later directory masks one of the same name in an earlier one
  (crio's default: ``/usr/share/containers/oci/hooks.d``, then
  ``/etc/containers/oci/hooks.d``); a directory that does not exist is none;
- matching hooks are injected in the order of their file names, lower-cased;
- ``when`` needs at least one of ``always``, ``annotations``, ``commands``,
  ``hasBindMounts``, and every one that is set must match: ``always`` is
  true; each ``annotations`` key/value regular expression pair matches one
  annotation of the container; one of the ``commands`` expressions matches
  ``process.args[0]``; ``hasBindMounts`` is true and the request has mounts.
  Expressions are searched for (not anchored), as Go's ``regexp.MatchString``.

Parsing and matching are pure; :class:`HookDirs` reads the directories again
when one of them changed, so a new hook applies without a restart.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "STAGES",
    "Hook",
    "HookDirs",
    "HookFileError",
    "inject",
    "load",
    "matching",
    "parse",
]

#: The stages of the OCI runtime spec (1.0.2 and 1.1) a hook file may name.
STAGES = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)
VERSION = "1.0.0"


class HookFileError(ValueError):
    """A hook file that cannot be used; ``str()`` names the file and the property."""


@dataclass(frozen=True, slots=True)
class Hook:
    """One hook file, checked."""

    #: The file name (what masks and orders hooks) and where it was read.
    name: str
    source: str
    #: The OCI hook entry to inject: path, and args, env, timeout when given.
    entry: Mapping[str, Any]
    stages: tuple[str, ...]
    always: bool | None = None
    annotations: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = ()
    commands: tuple[re.Pattern[str], ...] = ()
    has_bind_mounts: bool | None = None

    def matches(
        self, annotations: Mapping[str, str], args: Sequence[str], has_bind_mounts: bool
    ) -> bool:
        """Whether every condition of ``when`` holds for this container."""
        if self.always is not None and not self.always:
            return False
        if self.has_bind_mounts is not None and not (self.has_bind_mounts and has_bind_mounts):
            return False
        for key, value in self.annotations:
            if not any(key.search(k) and value.search(v) for k, v in annotations.items()):
                return False
        if self.commands:
            command = args[0] if args else ""
            if not any(pattern.search(command) for pattern in self.commands):
                return False
        return True


def _regex(text: Any, what: str) -> re.Pattern[str]:
    if not isinstance(text, str):
        raise HookFileError(f"{what}: {text!r} is not a string")
    try:
        return re.compile(text)
    except re.error as exc:
        raise HookFileError(f"{what}: {text!r} is not a regular expression: {exc}") from None


def _entry(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise HookFileError("hook: not an object")
    path = doc.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise HookFileError(f"hook.path: {path!r} is not an absolute path")
    entry: dict[str, Any] = {"path": path}
    for key in ("args", "env"):
        if key in doc:
            value = doc[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise HookFileError(f"hook.{key}: not a list of strings")
            if key == "env" and not all("=" in v for v in value):
                raise HookFileError("hook.env: entries must be KEY=VALUE")
            entry[key] = list(value)
    if "timeout" in doc:
        timeout = doc["timeout"]
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
            raise HookFileError(f"hook.timeout: {timeout!r} is not a positive number of seconds")
        entry["timeout"] = timeout
    unknown = sorted(set(doc) - {"path", "args", "env", "timeout"})
    if unknown:
        raise HookFileError(f"hook: unknown property {unknown[0]!r}")
    return entry


def _flag(when: Mapping[str, Any], key: str) -> bool | None:
    value = when.get(key)
    if value is not None and not isinstance(value, bool):
        raise HookFileError(f"when.{key}: {value!r} is not true or false")
    return value


def parse(name: str, source: str, text: bytes | str) -> Hook:
    """One hook file's content, checked (the hook's program is not looked at here).

    :raises HookFileError: naming the property at fault.
    """
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise HookFileError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise HookFileError("not a JSON object")
    version = doc.get("version")
    if version != VERSION:
        raise HookFileError(f"version: {version!r}; crio reads hook files of version {VERSION}")
    entry = _entry(doc.get("hook"))
    when = doc.get("when")
    if not isinstance(when, dict):
        raise HookFileError("when: missing, or not an object")
    conditions = ("always", "annotations", "commands", "hasBindMounts")
    if not any(key in when for key in conditions):
        raise HookFileError(f"when: needs at least one of {', '.join(conditions)}")
    unknown = sorted(set(when) - set(conditions))
    if unknown:
        raise HookFileError(f"when: unknown property {unknown[0]!r}")
    annotations = when.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise HookFileError("when.annotations: not an object")
    commands = when.get("commands") or []
    if not isinstance(commands, list):
        raise HookFileError("when.commands: not a list")
    stages = doc.get("stages")
    if not isinstance(stages, list) or not stages:
        raise HookFileError("stages: missing or empty")
    for stage in stages:
        if stage not in STAGES:
            raise HookFileError(f"stages: unknown stage {stage!r}; expected one of "
                                f"{', '.join(STAGES)}")  # fmt: skip
    return Hook(
        name=name,
        source=source,
        entry=entry,
        stages=tuple(stages),
        always=_flag(when, "always"),
        annotations=tuple(
            (_regex(k, "when.annotations key"), _regex(v, f"when.annotations[{k}]"))
            for k, v in annotations.items()
        ),
        commands=tuple(_regex(c, "when.commands") for c in commands),
        has_bind_mounts=_flag(when, "hasBindMounts"),
    )


def _check_program(hook: Hook) -> None:
    path = hook.entry["path"]
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise HookFileError(f"hook.path: {path} is not an executable file")


def load(directories: Sequence[str]) -> list[Hook]:
    """Every hook of ``directories`` (later ones mask earlier files), in injection order.

    :raises HookFileError: for the first unusable file, named in the message.
    """
    by_name: dict[str, str] = {}
    for directory in directories:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if name.endswith(".json") and os.path.isfile(path):
                by_name[name] = path
    hooks = []
    for name in sorted(by_name, key=lambda n: n.lower()):
        path = by_name[name]
        try:
            with open(path, "rb") as handle:
                hook = parse(name, path, handle.read(1 << 20))
            _check_program(hook)
        except (OSError, HookFileError) as exc:
            raise HookFileError(f"hook file {path}: {exc}") from None
        hooks.append(hook)
    return hooks


def matching(
    hooks: Sequence[Hook], annotations: Mapping[str, str], args: Sequence[str], bind_mounts: bool
) -> list[Hook]:
    """The hooks whose ``when`` holds for a container, in injection order."""
    return [hook for hook in hooks if hook.matches(annotations, args, bind_mounts)]


def inject(spec: dict[str, Any], hooks: Sequence[Hook]) -> dict[str, Any]:
    """Add each hook's entry to ``spec["hooks"]`` for its stages (in place; returned)."""
    if not hooks:
        return spec
    stages: dict[str, list[dict[str, Any]]] = spec.setdefault("hooks", {})
    for hook in hooks:
        for stage in hook.stages:
            stages.setdefault(stage, []).append(dict(hook.entry))
    return spec


@dataclass(slots=True)
class HookDirs:
    """The hooks of ``hooks_dir``, read again whenever a directory changed.

    ``current()`` costs one ``stat`` per directory when nothing changed.
    """

    directories: tuple[str, ...]
    _stamp: tuple[int, ...] = ()
    _hooks: list[Hook] = field(default_factory=list)

    def _stamps(self) -> tuple[int, ...]:
        stamps = []
        for directory in self.directories:
            try:
                st = os.stat(directory)
                stamps += [st.st_ino, st.st_mtime_ns]
            except FileNotFoundError:
                stamps += [0, 0]
            for name in _names(directory):
                try:
                    stamps.append(os.stat(os.path.join(directory, name)).st_mtime_ns)
                except FileNotFoundError:
                    stamps.append(0)
        return tuple(stamps)

    def current(self) -> list[Hook]:
        """The hooks now (blocking: call it in a worker thread).

        :raises HookFileError: a hook file is unusable (it names the file).
        """
        stamp = self._stamps()
        if stamp != self._stamp or not self._stamp:
            self._hooks = load(self.directories)
            self._stamp = stamp
        return list(self._hooks)


def _names(directory: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        return []
