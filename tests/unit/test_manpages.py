"""The manual pages: one per command, only options that exist, every config key, clean roff."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from crio.config import Config, RuntimeHandler
from crio.kpod.cli import build_parser
from crio.manpages import aliases_of, write_pages

#: The table of pages of issue 15; every other kpod command has its page too.
TABLE = [
    "man8/crio.8",
    "man5/crio.conf.5",
    "man1/kpod.1",
    *(
        f"man1/kpod-{name}.1"
        for name in (
            "diff",
            "export",
            "history",
            "images",
            "info",
            "inspect",
            "load",
            "mount",
            "pull",
            "push",
            "rmi",
            "save",
            "tag",
            "umount",
            "version",
            "ps",
            "pods",
            "logs",
            "stats",
            "exec",
            "start",
            "stop",
            "kill",
            "rm",
            "wait",
            "pause",
            "unpause",
            "cp",
        )
    ),
]
_OPTION = re.compile(r"\\fB(\\-(?:\\-)?[A-Za-z0-9][A-Za-z0-9\\-]*)\\fR")


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("man")
    write_pages(directory)
    return directory


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _section(text: str, name: str) -> str:
    match = re.search(rf"^\.SH {name}\n(.*?)(?=^\.SH |\Z)", text, re.MULTILINE | re.DOTALL)
    return match.group(1) if match else ""


def test_every_command_has_its_page(pages: Path) -> None:
    parser = build_parser()
    aliases = {a for names in aliases_of(parser).values() for a in names}
    commands = set(_subparsers(parser)) - aliases
    assert commands >= {"ps", "logs", "exec", "pods"}
    have = {p.name for p in (pages / "man1").iterdir()}
    assert {f"kpod-{c}.1" for c in commands} <= have
    for page in TABLE:
        assert (pages / page).is_file(), page
    assert have == {f"kpod-{c}.1" for c in commands} | {"kpod.1"}  # nothing stale


def test_every_option_on_a_page_exists(pages: Path) -> None:
    parser = build_parser()
    subs = _subparsers(parser)
    checked = 0
    for name, sub in subs.items():
        page = pages / "man1" / f"kpod-{name}.1"
        if not page.exists():
            continue  # an alias: its command's page
        options = _section(page.read_text(), "OPTIONS")
        shown = {m.replace("\\-", "-") for m in _OPTION.findall(options)}
        real = {s for a in sub._actions for s in a.option_strings}
        assert shown <= real, (name, shown - real)
        assert real <= shown, (name, real - shown)  # and every option is on the page
        checked += len(shown)
    top = _section((pages / "man1" / "kpod.1").read_text(), "OPTIONS")
    assert {m.replace("\\-", "-") for m in _OPTION.findall(top)} == {
        s for a in parser._actions for s in a.option_strings
    }
    assert checked > 100


def test_crio_conf_lists_every_key_with_its_default(pages: Path) -> None:
    text = (pages / "man5" / "crio.conf.5").read_text()
    on_page = set(re.findall(r"^\\fB([a-z_0-9]+)\\fR = ", text, re.MULTILINE))

    def keys(model: object) -> set[str]:
        found = set()
        for name in type(model).model_fields:
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                found |= keys(value)
            elif name != "runtimes":
                found.add(name)
        return found

    assert on_page == keys(Config().crio) | set(RuntimeHandler.model_fields)
    assert '\\fBlisten\\fR = \\fI"/var/run/crio/crio.sock"\\fR' in text
    for table in ("[CRIO]", "[CRIO.API]", "[CRIO.RUNTIME]", "[CRIO.RUNTIME.RUNTIMES.NAME]"):
        assert f".SH {table}" in text.replace("\\-", "-")


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
def test_man_renders_every_page_without_warnings(pages: Path) -> None:
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    files = sorted(pages.glob("man*/*"))
    assert len(files) >= len(TABLE)

    def render(page: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["man", "--warnings", "-E", "UTF-8", "-l", str(page)],
            capture_output=True,
            text=True,
            env=env,
        )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(render, files))
    for page, result in zip(files, results, strict=True):
        assert result.returncode == 0 and result.stderr == "", (page.name, result.stderr)
        assert "NAME" in result.stdout and "SEE ALSO" in result.stdout
