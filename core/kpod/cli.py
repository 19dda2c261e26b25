"""The ``kpod`` command line, in the spirit of the Docker CLI.

Commands work directly on the store under ``--root``/``--runroot`` (defaults
from crio.toml), without a running crio. Each command is a module of
:mod:`crio.kpod.commands` with a ``register(subparsers)`` function (see that
package's docstring); this module finds them, parses the command line,
runs the chosen command and maps errors to exit codes in one place
(:data:`EXIT_CODES`). Errors go to stderr as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from crio import __version__, errors
from crio.kpod import commands
from crio.kpod.common import Context, UsageError, add_store_flags

__all__ = ["EXIT_CODES", "exit_code", "main"]

#: Exit status per error class, most specific first, as the Docker CLI and
#: podman use them: 125 when kpod itself failed (its command line, its
#: configuration, its plugins, a component it needs), 1 for an error in the
#: named object (no such container, wrong state, the runtime or a registry refused).
#: ``wait``, ``exec`` and ``start -a`` return the container's own code.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (UsageError, 125),
    (errors.ConfigError, 125),
    (errors.PluginError, 125),
    (errors.UnavailableError, 125),
    (errors.CrioError, 1),
)
#: Anything else is a failure of kpod itself.
INTERNAL_ERROR = 125


def exit_code(exc: BaseException) -> int:
    """The exit status for ``exc`` (see :data:`EXIT_CODES`)."""
    return next((code for cls, code in EXIT_CODES if isinstance(exc, cls)), INTERNAL_ERROR)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 125 (Docker's convention)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(125)


def command_modules() -> list[str]:
    """The modules of :mod:`crio.kpod.commands`, each registering its subcommands."""
    return sorted(
        f"{commands.__name__}.{info.name}"
        for info in pkgutil.iter_modules(commands.__path__)
        if not info.name.startswith("_")
    )


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="warning", help="log verbosity (debug, info ...)")
    add_store_flags(parser)


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (after kpod's own options), or None."""
    scout = argparse.ArgumentParser(add_help=False)
    _global_options(scout)
    _, rest = scout.parse_known_args(argv)
    return rest[0] if rest and not rest[0].startswith("-") else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """kpod's parser; with ``argv``, registering only the command it names where that
    command's module has its name (``kpod images``: commands/images.py), so that a
    command does not import every other one (kpod images starts in ~0.1 s instead
    of ~0.35 s of CPU). ``--help`` or a command kept in another module: all of them."""
    parser = _Parser(prog="kpod", description="Manage crio's images and containers.")
    parser.add_argument("--version", action="version", version=f"kpod version {__version__}")
    _global_options(parser)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    modules = command_modules()
    word = _command_word(argv) if argv is not None else None
    guess = f"{commands.__name__}.{word}"
    if word is not None and guess in modules:
        importlib.import_module(guess).register(sub)
        if word in sub.choices:
            return parser
        modules.remove(guess)
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


async def _run(args: argparse.Namespace) -> int:
    ctx = Context(args)
    try:
        return int(await args.func(args, ctx) or 0)
    finally:
        await ctx.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        stream=sys.stderr,
        format="kpod %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_run(args))
    except errors.CrioError as exc:
        print(f"kpod: {exc}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug or an unexpected host failure: kpod itself failed
        logging.getLogger("crio.kpod").debug("kpod failed", exc_info=True)
        print(f"kpod: {type(exc).__name__}: {exc}", file=sys.stderr)
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
