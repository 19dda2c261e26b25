"""Manual pages for crio and kpod, generated from the definitions ``--help`` uses.

crio(8) and kpod(1) come from the argparse parsers of ``crio`` and
``kpod``, one kpod-COMMAND(1) per kpod subcommand, and crio.conf(5) from
the models of :mod:`crio.config` (every key, its default, its
meaning). Nothing here is written by hand per command, so a flag or a key
added to the code is on its page the next time the pages are made::

    python -m crio.manpages DIR          # DIR/man1/kpod.1, DIR/man5/crio.conf.5, ...

``make prepare`` (for ``make run`` and ``make test``) and ``make install`` write them under
``$(MANDIR)`` (default /usr/local/share/man).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from crio import __version__

__all__ = ["Page", "conf_page", "crio_page", "kpod_pages", "pages", "write_pages"]

MANUAL = {1: "kpod Manual", 5: "crio File Formats", 8: "crio Manual"}
SOURCE = f"crio {__version__}"


class Page:
    """One manual page being written as roff."""

    def __init__(self, name: str, section: int, summary: str) -> None:
        self.name = name
        self.section = section
        self.lines = [
            f'.TH "{name.upper()}" "{section}" "" "{SOURCE}" "{MANUAL[section]}"',
            ".SH NAME",
            f"{_escape(name)} \\- {_escape(summary)}",
        ]

    @property
    def filename(self) -> str:
        return f"man{self.section}/{self.name}.{self.section}"

    def heading(self, title: str) -> None:
        self.lines.append(f".SH {title}")

    def text(self, text: str) -> None:
        """Paragraphs separated by blank lines."""
        for number, paragraph in enumerate(p for p in text.split("\n\n") if p.strip()):
            if number:
                self.lines.append(".PP")
            self.lines.append(_escape(" ".join(paragraph.split())))

    def item(self, term: str, body: str) -> None:
        """``term`` (already roff) on its own line, ``body`` indented below it."""
        self.lines += [".TP", term, _escape(body) if body else "\\&"]

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def _bold(text: str) -> str:
    return f"\\fB{_escape(text)}\\fR"


def _italic(text: str) -> str:
    return f"\\fI{_escape(text)}\\fR"


# -- from argparse ---------------------------------------------------------------


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    return parser._get_formatter()._expand_help(action)


def _option_term(action: argparse.Action) -> str:
    names = ", ".join(_bold(s) for s in action.option_strings)
    if action.nargs == 0:
        return names
    if action.choices:
        value = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        value = str(action.metavar or action.dest.upper())
    return f"{names} {_italic(value)}"


def _options(page: Page, parser: argparse.ArgumentParser) -> None:
    options = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]
    if not options:
        return
    page.heading("OPTIONS")
    for action in options:
        page.item(_option_term(action), _help(parser, action))


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]


def _synopsis(page: Page, words: str, parser: argparse.ArgumentParser) -> None:
    page.heading("SYNOPSIS")
    line = _bold(words)
    if any(a.option_strings for a in parser._actions):
        line += " [\\fIoptions\\fR]"
    for action in _positionals(parser):
        name = _italic(str(action.metavar or action.dest.upper()))
        if action.nargs in ("*", "?"):
            name = f"[{name}]"
        if action.nargs in ("*", "+", argparse.REMAINDER):
            name += "..."
        line += " " + name
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        line += " \\fICOMMAND\\fR [\\fIoptions\\fR]"
    page.lines.append(line)


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, Any]]:
    """(name, help, parser) of each subcommand, aliases folded into their command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                yield name, helps.get(name, ""), sub


def aliases_of(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Subcommand name -> its other names."""
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            first: dict[int, str] = {}
            for name, sub in action.choices.items():
                if id(sub) in first:
                    found.setdefault(first[id(sub)], []).append(name)
                else:
                    first[id(sub)] = name
    return found


# -- kpod ------------------------------------------------------------------------

KPOD_EXIT = (
    ("0", "success"),
    (
        "1",
        "an error in a named object: no such container, pod or image, the wrong state, "
        "the runtime refused",
    ),
    (
        "125",
        "kpod itself failed: its command line, its configuration, its plugins, a "
        "component it needs",
    ),
    ("N", "wait, exec and start \\-\\-attach exit with the container's (or command's) own code"),
)

KPOD_DESCRIPTION = """\
kpod is crio's daemonless companion: it works on the same image and layer store and the
same pod and container records crio keeps, for people debugging a node, with the
Docker CLI's commands, tables and --format conventions.

Reading commands (ps, pods, inspect, logs, stats, images ...) read crio's records and ask
each container's runtime plugin what it knows now, so an exit while crio was down or a
paused container shows. Commands that change a record (start, stop, rm) go through crio
over its socket when crio runs, and otherwise run crio's own code under the owner lock of
crio's state directory, so that crio sees every change at once or when it next starts.
kill, pause, unpause and exec act on the container's processes through its runtime."""


def _kpod_parser() -> argparse.ArgumentParser:
    from crio.kpod.cli import build_parser

    return build_parser()


def kpod_pages(parser: argparse.ArgumentParser | None = None) -> list[Page]:
    """kpod(1) and kpod-COMMAND(1) for each subcommand."""
    parser = parser or _kpod_parser()
    commands = list(_subcommands(parser))
    aliases = aliases_of(parser)
    main = Page("kpod", 1, "manage crio's images, pods and containers without a daemon")
    _synopsis(main, "kpod", parser)
    main.heading("DESCRIPTION")
    main.text(KPOD_DESCRIPTION)
    _options(main, parser)
    main.heading("COMMANDS")
    for name, text, _ in commands:
        main.item(f"\\fBkpod\\-{_escape(name)}\\fR(1)", text)
    _exit_status(main, KPOD_EXIT)
    main.heading("SEE ALSO")
    main.lines.append(_see_also([f"kpod-{n}(1)" for n, _, _ in commands] + ["crio(8)"]))
    out = [main]
    for name, text, sub in commands:
        page = Page(f"kpod-{name}", 1, text)
        _synopsis(page, f"kpod {name}", sub)
        page.heading("DESCRIPTION")
        page.text(sub.description or (text[:1].upper() + text[1:] + "."))
        if aliases.get(name):
            page.text("Also known as " + ", ".join(f"kpod {a}" for a in aliases[name]) + ".")
        _options(page, sub)
        page.heading("GLOBAL OPTIONS")
        page.text(
            "The options of kpod(1) come before the command name: "
            + ", ".join(
                s for a in parser._actions if a.option_strings for s in a.option_strings[-1:]
            )
            + "."
        )
        _exit_status(page, KPOD_EXIT)
        page.heading("SEE ALSO")
        page.lines.append(_see_also(["kpod(1)", "crio(8)"]))
        out.append(page)
    return out


def _exit_status(page: Page, codes: Sequence[tuple[str, str]]) -> None:
    page.heading("EXIT STATUS")
    for code, meaning in codes:
        page.lines += [".TP", f"\\fB{code}\\fR", meaning if "\\" in meaning else _escape(meaning)]


def _see_also(names: Sequence[str]) -> str:
    parts = []
    for ref in names:
        name, _, section = ref.partition("(")
        parts.append(f"\\fB{_escape(name)}\\fR({section}")
    return ",\n".join(parts)


# -- crio ------------------------------------------------------------------------

CRIO_DESCRIPTION = """\
crio is a Kubernetes container runtime: it serves the CRI v1 API (runtime.v1) over gRPC on
a unix socket to the kubelet or crictl, and runs pods and containers with OCI runtimes
under conmon, keeps images and layers in a containers/storage-compatible store, pulls
under a signature policy and wires pods with CNI. Runtimes, storage drivers, image
transports and networks are plugins found through Python entry points.

Without a command crio runs the daemon in the foreground until SIGTERM or SIGINT; SIGHUP
reloads the configuration. crio takes the owner lock of its state directory while it
runs: kpod then asks it over its socket instead of changing crio's records itself.

The configuration is read from /etc/crio/crio.conf, then the drop-ins in
/etc/crio/crio.conf.d/*.conf in lexical order; the options below override both.
crio.conf(5) describes every key."""

CRIO_FILES = (
    ("/etc/crio/crio.conf", "the main configuration file (crio.conf(5))"),
    ("/etc/crio/crio.conf.d/", "drop-in configuration files, read in lexical order"),
    ("/var/run/crio/crio.sock", "the CRI socket (crio.api.listen)"),
    ("/var/lib/crio/owner.lock", "held by the running crio (crio.state_dir)"),
)


def crio_page(parser: argparse.ArgumentParser | None = None) -> Page:
    if parser is None:
        from crio.cli import Commands, _parser
        from crio.plugins import Plugins

        plugins = Plugins()
        plugins.load_entry_points()
        commands = Commands()
        plugins.add_commands(commands)
        parser = _parser(commands)
    page = Page("crio", 8, "a Kubernetes CRI v1 container runtime")
    _synopsis(page, "crio", parser)
    page.heading("DESCRIPTION")
    page.text(CRIO_DESCRIPTION)
    _options(page, parser)
    page.heading("COMMANDS")
    for name, text, sub in _subcommands(parser):
        term = f"\\fBcrio {_escape(name)}\\fR"
        page.item(term, text)
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                page.lines += [".RS", ".TP", _option_term(action), _escape(_help(sub, action))]
                page.lines.append(".RE")
    _exit_status(page, (("0", "success"), ("1", "an error, printed on one line")))
    page.heading("FILES")
    for path, meaning in CRIO_FILES:
        page.item(_bold(path), meaning)
    page.heading("SEE ALSO")
    page.lines.append(_see_also(["crio.conf(5)", "kpod(1)", "conmon(8)", "runc(8)"]))
    return page


def conf_page() -> Page:
    """crio.conf(5): every table and key of :class:`crio.config.Config` with its default."""
    from crio.config import Config, RuntimeHandler

    page = Page("crio.conf", 5, "the configuration file of crio")
    page.heading("DESCRIPTION")
    page.text(
        "crio reads /etc/crio/crio.conf (TOML), then every *.conf file of "
        "/etc/crio/crio.conf.d in lexical order; a drop-in overrides the keys it names, and "
        "crio's command-line options override the files. Every table sits under [crio]. An "
        "unknown key or a value of the wrong kind stops crio with one line naming the file, "
        'the key, what was given and what is expected. "crio config --default" prints '
        "every key with its default."
    )
    default = Config()
    for path, model in _tables(default.crio, ["crio"]):
        _table_section(page, path, model)
    handler_default = RuntimeHandler()
    page.heading("[CRIO.RUNTIME.RUNTIMES.NAME]")
    page.text(
        "One table per runtime handler; NAME is what a Kubernetes RuntimeClass sends as "
        "its handler. Keys beyond these belong to the plugin that claims runtime_type, "
        "which refuses the ones it does not know. Defaults: "
        + "; ".join(
            f"[crio.runtime.runtimes.{n}] runtime_path = {h.runtime_path!r}, "
            f"runtime_root = {h.runtime_root!r}"
            for n, h in default.crio.runtime.runtimes.items()
        )
        + "."
    )
    _keys(page, handler_default)
    page.heading("EXAMPLE")
    page.lines += [
        ".EX",
        "[crio.runtime]",
        'default_runtime = "crun"',
        "",
        "[crio.runtime.runtimes.kata]",
        'runtime_type = "kata"',
        ".EE",
    ]
    page.heading("SEE ALSO")
    page.lines.append(_see_also(["crio(8)", "kpod(1)"]))
    return page


def _tables(model: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    from crio._model import BaseModel

    yield path, model
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _tables(value, [*path, name])


def _table_section(page: Page, path: list[str], model: Any) -> None:
    page.heading(_escape("[" + ".".join(path).upper() + "]"))
    doc = (type(model).__doc__ or "").strip().splitlines()[0]
    doc = re.sub(r"^``\[[^\]]*\]``:\s*", "", doc).replace("``", "")
    page.text(doc[:1].upper() + doc[1:])
    _keys(page, model)


def _keys(page: Page, model: Any) -> None:
    from crio._model import BaseModel
    from crio._toml import _value

    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel) or name == "runtimes":
            continue
        default = _value(value)
        page.item(
            f"{_bold(name)} = {_italic(default)}",
            (field.description or "").replace("``", ""),
        )


# -- all of them ---------------------------------------------------------------------


def pages() -> list[Page]:
    return [crio_page(), conf_page(), *kpod_pages()]


def write_pages(directory: Path) -> list[Path]:
    """Write every page under ``directory`` (``man1/``, ``man5/``, ``man8/``); their paths."""
    written = []
    for page in pages():
        path = Path(directory) / page.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page.render())
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crio.manpages", description="Write crio's and kpod's manual pages."
    )
    parser.add_argument("directory", type=Path, help="a man directory, e.g. /usr/local/share/man")
    args = parser.parse_args(argv)
    for path in write_pages(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
