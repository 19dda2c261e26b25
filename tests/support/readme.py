"""The README's examples: found by their markers, and shell blocks replayed for real.

Markers (in README.md, each on the line right before what it marks):

* ``<!-- example: NAME -->`` before a fenced block makes it an example.
  For an ``sh`` block, NAME names a script that the tests replay command by
  command. For any other language, NAME is a file name (``web-pod.json``,
  ``50-clear.conf``, ``crio-copydir/pyproject.toml``) and the block is that
  file's content: the tests write it into a work directory, where the
  scripts find it, and check it in the way its kind calls for.
* ``<!-- table: NAME -->`` before a Markdown table marks the table, whose
  rows a test compares with the code.

How a script is replayed (:class:`Replay`):

* one command per line (a ``\\`` at the end continues it); quoting as in sh;
  ``#`` outside quotes starts a comment;
* ``VAR=$(command)`` keeps the command's standard output, stripped, in VAR;
  ``$VAR`` and ``${VAR}`` expand (upper-case names only; an unset one is an
  error);
* a comment ``# => TEXT``: the command succeeds and a line of its output
  reads TEXT; ``# fails: TEXT``: it fails and a line of its output or its
  errors reads TEXT. Runs of blanks count as one blank and ``...`` stands
  for any text. A command with neither must succeed;
* the programs a reader types, each run for real:

  - ``crictl SUB ...``: the CRI calls cri-tools' crictl makes for SUB, sent
    by crio's own client to the crio under test (:mod:`support.crictl`),
    since crictl is not installed here;
  - ``.venv/bin/crio`` and ``.venv/bin/kpod``: the ones next to
    ``sys.executable``, with the node's ``--config`` and ``--config-dir``
    put first, so that they work on the crio under test;
  - ``.venv/bin/pip install ...``: the real pip, installing into the node's
    private site directory (``--target``, without an index, dependencies or
    build isolation) instead of the venv; every command gets that directory
    on ``PYTHONPATH``;
  - ``.venv/bin/pytest ...``: the real pytest, in the crio checkout;
  - ``uname``: the real one.

  Any other program stops the replay: teach this module before using it in
  the README.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Block",
    "Command",
    "Node",
    "Outcome",
    "Replay",
    "ReplayError",
    "commands",
    "matches",
    "parse_blocks",
    "parse_tables",
]

CHECKOUT = Path(__file__).resolve().parents[2]
README = CHECKOUT / "README.md"

_EXAMPLE = re.compile(r"^<!-- example: (\S+) -->$")
_TABLE = re.compile(r"^<!-- table: (\S+) -->$")
_FENCE = re.compile(r"^```(\w*)\s*$")
_ASSIGN = re.compile(r"^([A-Z_][A-Z0-9_]*)=\$\((.*)\)$")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
#: Seconds any one command may take (a VM pod's boot under TCG on a busy machine).
COMMAND_TIMEOUT = 900.0


class ReplayError(AssertionError):
    """A block does not do what the README says; the message names the README line."""


@dataclass(frozen=True, slots=True)
class Block:
    """One marked fenced block: its marker's NAME, the fence's language, its text."""

    name: str
    lang: str
    text: str
    line: int  # the README line of the opening fence


def parse_blocks(markdown: str) -> dict[str, Block]:
    """Every ``<!-- example: NAME -->`` block, by NAME.

    :raises ValueError: a marker not followed by a fence, an unclosed fence, a
        NAME used twice.
    """
    lines = markdown.splitlines()
    blocks: dict[str, Block] = {}
    for number, line in enumerate(lines):
        found = _EXAMPLE.match(line.strip())
        if not found:
            continue
        name = found.group(1)
        fence = _FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
        if fence is None:
            raise ValueError(f"README line {number + 1}: example {name} is not before a fence")
        end = next((i for i in range(number + 2, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise ValueError(f"README line {number + 2}: the fence of {name} is never closed")
        if name in blocks:
            raise ValueError(f"README line {number + 1}: example {name} is marked twice")
        text = "\n".join(lines[number + 2 : end]) + "\n"
        blocks[name] = Block(name, fence.group(1), text, number + 2)
    return blocks


def parse_tables(markdown: str) -> dict[str, list[list[str]]]:
    """Every ``<!-- table: NAME -->`` table's body rows (header and rule left out), as cells."""
    lines = markdown.splitlines()
    tables: dict[str, list[list[str]]] = {}
    for number, line in enumerate(lines):
        found = _TABLE.match(line.strip())
        if not found:
            continue
        rows = []
        for row in lines[number + 3 :]:
            if not row.startswith("|"):
                break
            rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
        tables[found.group(1)] = rows
    return tables


# -- commands (pure) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """One command line of a script, before its variables expand."""

    text: str
    line: int
    assign: str = ""  # VAR of VAR=$(...)
    expect: str = ""  # TEXT of "# => TEXT"
    fails: str = ""  # TEXT of "# fails: TEXT"


def _split_comment(line: str) -> tuple[str, str]:
    """``line`` cut at its first ``#`` outside quotes that starts a word."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), ""


def commands(block: Block) -> list[Command]:
    """The commands of an ``sh`` block, with what their comments expect."""
    found: list[Command] = []
    pending, start = "", 0
    for offset, raw in enumerate(block.text.splitlines()):
        if not pending:
            start = block.line + 1 + offset
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        text, comment = _split_comment(pending + raw)
        pending = ""
        if not text.strip():
            continue
        expect = comment[3:].strip() if comment.startswith("=> ") else ""
        fails = comment[7:].strip() if comment.startswith("fails: ") else ""
        assign = _ASSIGN.match(text.strip())
        if assign:
            found.append(Command(assign.group(2), start, assign.group(1), expect, fails))
        else:
            found.append(Command(text.strip(), start, "", expect, fails))
    return found


def matches(pattern: str, output: str) -> bool:
    """Whether a line of ``output`` reads ``pattern`` (blanks collapsed, ``...`` any text)."""
    parts = [re.escape(" ".join(part.split())) for part in pattern.split("...")]
    regex = re.compile("^" + ".*".join(parts) + "$")
    return any(regex.match(" ".join(line.split())) for line in output.splitlines())


# -- running --------------------------------------------------------------------------


class CriCli(Protocol):
    def run(self, args: Sequence[str]) -> tuple[int, str, str]: ...


@dataclass
class Node:
    """Where a script's commands go: the crio under test and its private places."""

    config: Path  # the crio.conf of the crio under test
    config_dir: Path  # its drop-in directory
    workdir: Path  # where the README's files are; commands run here
    site: Path  # pip's --target; on every command's PYTHONPATH
    crictl: CriCli | None = None

    def env(self) -> dict[str, str]:
        paths = [str(self.site), *filter(None, [os.environ.get("PYTHONPATH", "")])]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


@dataclass(frozen=True, slots=True)
class Outcome:
    command: Command
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Replay:
    """Runs scripts on a :class:`Node`, keeping their variables and what each command did."""

    node: Node
    variables: dict[str, str] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)

    def run(self, block: Block) -> list[Outcome]:
        """Replay ``block``; :raises ReplayError: a command did not do what the README says."""
        if block.lang != "sh":
            raise ReplayError(f"README line {block.line}: {block.name} is not an sh block")
        done = []
        for command in commands(block):
            outcome = self._one(command)
            done.append(outcome)
            self.outcomes.append(outcome)
        return done

    def output(self, text: str) -> str:
        """The standard output of the last command whose text (before expansion) is ``text``."""
        for outcome in reversed(self.outcomes):
            if outcome.command.text == text:
                return outcome.stdout
        raise KeyError(text)

    def _expand(self, command: Command) -> str:
        def value(found: re.Match[str]) -> str:
            name = found.group(1) or found.group(2)
            if name not in self.variables:
                raise ReplayError(f"README line {command.line}: ${name} is not set")
            return self.variables[name]

        return _VAR.sub(value, command.text)

    def _one(self, command: Command) -> Outcome:
        argv = tuple(shlex.split(self._expand(command)))
        code, out, err = self._execute(command, argv)
        outcome = Outcome(command, argv, code, out, err)
        where = f"README line {command.line}: `{command.text}`"
        said = f"exit status {code}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
        if command.fails:
            if code == 0:
                raise ReplayError(f"{where} succeeded; the README says it fails\n{said}")
            if not matches(command.fails, out + "\n" + err):
                raise ReplayError(f"{where}: no line reads {command.fails!r}\n{said}")
        elif code != 0:
            raise ReplayError(f"{where} failed\n{said}")
        elif command.expect and not matches(command.expect, out):
            raise ReplayError(f"{where}: no line reads {command.expect!r}\n{said}")
        if command.assign:
            self.variables[command.assign] = out.strip()
        return outcome

    def _execute(self, command: Command, argv: tuple[str, ...]) -> tuple[int, str, str]:
        program, args = argv[0], list(argv[1:])
        cwd = self.node.workdir
        if program == "crictl":
            if self.node.crictl is None:
                raise ReplayError(f"README line {command.line}: no crio to send crictl to")
            return self.node.crictl.run(args)
        if program in (".venv/bin/crio", ".venv/bin/kpod"):
            binary = str(Path(sys.executable).with_name(Path(program).name))
            places = ["--config", str(self.node.config), "--config-dir", str(self.node.config_dir)]
            real = [binary, *places, *args]
        elif program == ".venv/bin/pip" and args[:1] == ["install"]:
            private = ["--target", str(self.node.site), "--no-index", "--no-deps"]
            real = [sys.executable, "-m", "pip", "install", *private, "--no-build-isolation"]
            real += args[1:]
        elif program == ".venv/bin/pytest":
            real, cwd = [sys.executable, "-m", "pytest", *args], CHECKOUT
        elif program == "uname":
            real = ["uname", *args]
        else:
            raise ReplayError(
                f"README line {command.line}: the replay does not know {program!r} "
                "(see tests/support/readme.py)"
            )
        done = subprocess.run(
            real, cwd=cwd, env=self.node.env(), capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr


def write_files(blocks: Mapping[str, Block], workdir: Path) -> list[Path]:
    """Write every non-``sh`` block into ``workdir`` under its NAME; return the paths."""
    written = []
    for block in blocks.values():
        if block.lang == "sh":
            continue
        path = workdir / block.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text)
        written.append(path)
    return written


def summary(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """What each command did, for an assertion message."""
    return [{"line": o.command.line, "argv": o.argv, "rc": o.returncode} for o in outcomes]
