"""oci-hooks(5) files: parsing, the ``when`` rules, masking, order, reloading, injection."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from crio.oci.hooks import HookDirs, HookFileError, inject, load, matching, parse

HOOK = "/bin/true"


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": "1.0.0",
        "hook": {"path": HOOK, "args": ["true", "x"], "env": ["A=1"], "timeout": 5},
        "when": {"always": True},
        "stages": ["prestart", "poststop"],
    }
    doc.update(changes)
    return doc


def _write(directory: Path, name: str, doc: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(doc))
    return path


def test_a_good_file() -> None:
    hook = parse("a.json", "/d/a.json", json.dumps(_doc()))
    assert hook.entry == {"path": HOOK, "args": ["true", "x"], "env": ["A=1"], "timeout": 5}
    assert hook.stages == ("prestart", "poststop") and hook.always is True


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": "0.1.0"}, "version: '0.1.0'; crio reads hook files of version 1.0.0"),
        ({"hook": {"path": "true"}}, "hook.path: 'true' is not an absolute path"),
        ({"hook": {"path": HOOK, "args": "x"}}, "hook.args: not a list of strings"),
        ({"hook": {"path": HOOK, "env": ["A"]}}, "hook.env: entries must be KEY=VALUE"),
        ({"hook": {"path": HOOK, "timeout": 0}}, "hook.timeout: 0 is not a positive number"),
        ({"hook": {"path": HOOK, "pth": 1}}, "hook: unknown property 'pth'"),
        ({"when": {}}, "when: needs at least one of always, annotations, commands"),
        ({"when": {"always": "yes"}}, "when.always: 'yes' is not true or false"),
        ({"when": {"commands": ["("]}}, "when.commands: '(' is not a regular expression"),
        ({"when": {"annotations": {"a": "["}}}, "when.annotations[a]: '[' is not a regular"),
        ({"when": {"anotations": {}}}, "when: needs at least one of"),
        ({"stages": []}, "stages: missing or empty"),
        ({"stages": ["prestrat"]}, "stages: unknown stage 'prestrat'; expected one of prestart"),
    ],
)
def test_bad_files_name_the_property(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(HookFileError) as caught:
        parse("a.json", "/d/a.json", json.dumps(_doc(**changes)))
    assert message in str(caught.value)


def test_not_json() -> None:
    with pytest.raises(HookFileError, match="not JSON"):
        parse("a.json", "/d/a.json", "{")


@pytest.mark.parametrize(
    ("when", "annotations", "args", "binds", "expected"),
    [
        ({"always": True}, {}, ["sh"], False, True),
        ({"always": False}, {}, ["sh"], False, False),
        ({"hasBindMounts": True}, {}, ["sh"], True, True),
        ({"hasBindMounts": True}, {}, ["sh"], False, False),
        ({"hasBindMounts": False}, {}, ["sh"], False, False),
        ({"commands": [".*/init$", "sleep"]}, {}, ["/sbin/init"], False, True),
        ({"commands": ["sleep"]}, {}, ["/bin/sleep"], False, True),  # searched, not anchored
        ({"commands": ["^sleep$"]}, {}, ["/bin/sleep"], False, False),
        ({"commands": ["sh"]}, {}, [], False, False),
        ({"annotations": {"^a$": "^1$"}}, {"a": "1", "b": "2"}, ["sh"], False, True),
        ({"annotations": {"^a$": "^1$"}}, {"a": "2"}, ["sh"], False, False),
        # Every pair must match some annotation.
        ({"annotations": {"^a$": "1", "^c$": "."}}, {"a": "1"}, ["sh"], False, False),
        # Every condition that is set must hold.
        ({"always": True, "commands": ["^x$"]}, {}, ["sh"], False, False),
        ({"hasBindMounts": True, "annotations": {"k": "v"}}, {"k": "v"}, ["sh"], True, True),
    ],
)
def test_when(
    when: dict[str, Any], annotations: dict[str, str], args: list[str], binds: bool, expected: bool
) -> None:
    hook = parse("a.json", "/d/a.json", json.dumps(_doc(when=when)))
    assert hook.matches(annotations, args, binds) is expected


def test_later_directories_mask_earlier_files_and_order_is_by_lowercased_name(
    tmp_path: Path,
) -> None:
    usr, etc = tmp_path / "usr", tmp_path / "etc"
    _write(usr, "01-my-hook.json", _doc(hook={"path": HOOK, "args": ["usr"]}))
    _write(usr, "02-another-hook.json", _doc(hook={"path": HOOK, "args": ["two"]}))
    _write(etc, "01-my-hook.json", _doc(hook={"path": HOOK, "args": ["etc"]}))
    _write(etc, "01-UPPERCASE.json", _doc(hook={"path": HOOK, "args": ["upper"]}))
    (etc / "README").write_text("not a hook")
    hooks = load([str(usr), str(etc), str(tmp_path / "missing")])
    assert [(h.name, h.entry["args"][0]) for h in hooks] == [
        ("01-my-hook.json", "etc"),
        ("01-UPPERCASE.json", "upper"),
        ("02-another-hook.json", "two"),
    ]


def test_a_hook_program_that_cannot_run_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.json", _doc(hook={"path": str(tmp_path / "nope")}))
    with pytest.raises(HookFileError, match=rf"hook file {path}: hook.path: .* not an executable"):
        load([str(tmp_path)])


def test_injection_adds_entries_per_stage_in_order(tmp_path: Path) -> None:
    _write(tmp_path, "b.json", _doc(hook={"path": HOOK, "args": ["b"]}, stages=["prestart"]))
    _write(tmp_path, "a.json", _doc(hook={"path": HOOK, "args": ["a"]}))
    _write(tmp_path, "c.json", _doc(hook={"path": HOOK, "args": ["c"]},
                                    when={"commands": ["^never$"]}))  # fmt: skip
    spec: dict[str, Any] = {"hooks": {"prestart": [{"path": "/own"}]}}
    inject(spec, matching(load([str(tmp_path)]), {}, ["sleep"], False))
    assert spec["hooks"] == {
        "prestart": [
            {"path": "/own"},
            {"path": HOOK, "args": ["a"]},
            {"path": HOOK, "args": ["b"]},
        ],
        "poststop": [{"path": HOOK, "args": ["a"]}],
    }
    untouched: dict[str, Any] = {}
    assert inject(untouched, []) == {}


def test_hook_dirs_read_again_when_a_directory_changes(tmp_path: Path) -> None:
    hooks = HookDirs((str(tmp_path / "d"),))
    assert hooks.current() == []
    path = _write(tmp_path / "d", "a.json", _doc())
    assert [h.name for h in hooks.current()] == ["a.json"]
    path.write_text(json.dumps(_doc(stages=["poststart"])))
    os.utime(path, ns=(1, 1))  # a change the directory's own mtime does not show
    assert hooks.current()[0].stages == ("poststart",)
    path.write_text("{")
    with pytest.raises(HookFileError, match="not JSON"):
        hooks.current()
    path.unlink()
    assert hooks.current() == []
