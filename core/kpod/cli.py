"""The ``kpod`` command line, in the spirit of the Docker CLI.

Commands work directly on the store under ``--root``/``--runroot`` (defaults
from crio.toml), without a running crio. Errors go to stderr as one line and
map to exit codes in one place (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

from crio import __version__, errors

__all__ = ["EXIT_CODES", "main"]

#: Exit status per error class (the Docker CLI exits 1 for most failures,
#: 125 when the command itself is wrong).
EXIT_CODES: tuple[tuple[type[errors.CrioError], int], ...] = (
    (errors.InvalidRequestError, 125),
    (errors.ConfigError, 125),
    (errors.CrioError, 1),
)


def _exit_code(exc: errors.CrioError) -> int:
    return next(code for cls, code in EXIT_CODES if isinstance(exc, cls))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpod", description="Manage crio's images and containers."
    )
    parser.add_argument("--version", action="version", version=f"kpod version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("version", help="show version information")
    return parser


def _version() -> int:
    print(f"Version:       {__version__}")
    print(f"Python:        {platform.python_version()}")
    print(f"OS/Arch:       {sys.platform}/{platform.machine()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "version":
            return _version()
    except errors.CrioError as exc:
        print(f"kpod: {exc}", file=sys.stderr)
        return _exit_code(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
