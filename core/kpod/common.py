"""What kpod's commands share: store flags, the lazily opened store, output helpers."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crio import config as crio_config
from crio.errors import InvalidRequestError
from crio.plugins import Plugins
from crio.storage import Store

__all__ = [
    "Context",
    "UsageError",
    "add_store_flags",
    "human_ago",
    "human_size",
    "parse_filters",
    "print_rows",
    "refuse_tty_output",
    "render",
    "write_json",
]


class UsageError(InvalidRequestError):
    """The command line is wrong (exit status 125)."""


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """The flags crio and kpod share for the store and the configuration."""
    parser.add_argument("--config", help="crio.toml (default /etc/crio/crio.conf)")
    parser.add_argument("--config-dir", help="drop-in directory (default /etc/crio/crio.conf.d)")
    parser.add_argument("--root", help="storage root directory")
    parser.add_argument("--runroot", help="storage run-time directory")
    parser.add_argument("--storage-driver", help="graph driver (overlay, vfs, ...)")
    parser.add_argument(
        "--storage-opt", action="append", default=None, help="driver option (repeatable)"
    )


class Context:
    """Per-invocation state: the configuration and the store, opened on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: crio_config.Config | None = None
        self._store: Store | None = None
        self._plugins: Plugins | None = None
        self._node: Any = None

    def plugins(self) -> Plugins:
        """The plugin host, loaded once per invocation (the store and transports share it)."""
        if self._plugins is None:
            self._plugins = Plugins()
            self._plugins.load_entry_points()
            if self._config is not None:
                self._plugins.configure(self._config)
        return self._plugins

    def node(self) -> Any:
        """crio's records and runtimes (:class:`crio.kpod.node.Node`), opened on first use."""
        if self._node is None:
            from crio.kpod.node import Node

            self._node = Node(self)
        return self._node

    def config(self) -> crio_config.Config:
        if self._config is None:
            overrides: dict[str, Any] = {}
            for flag, key in (
                ("root", "crio.root"),
                ("runroot", "crio.runroot"),
                ("storage_driver", "crio.storage_driver"),
                ("storage_opt", "crio.storage_option"),
            ):
                value = getattr(self.args, flag, None)
                if value is not None:
                    overrides[key] = value
            self._config = crio_config.load(self.args.config, self.args.config_dir, overrides)
        return self._config

    async def store(self) -> Store:
        if self._store is None:
            cfg = self.config().crio
            self._store = await Store.open(
                Path(cfg.root),
                Path(cfg.runroot),
                cfg.storage_driver,
                cfg.storage_option,
                plugins=self.plugins(),
                image_stores=cfg.additionalimagestores,
            )
        return self._store

    async def close(self) -> None:
        if self._node is not None:
            await self._node.close()
            self._node = None
        if self._store is not None:
            await self._store.close()
            self._store = None


# -- output ----------------------------------------------------------------


def human_size(size: float) -> str:
    """Docker's ``units.HumanSize``: decimal units, 3 significant digits ("2.03MB")."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.3g}{units[i]}"


def human_ago(ns: int, now: float | None = None) -> str:
    """Docker's "2 years ago" for a time in nanoseconds since the epoch."""
    if ns <= 0:
        return "N/A"
    seconds = (now if now is not None else time.time()) - ns / 1e9
    if seconds < 1:
        return "Less than a second ago"
    for limit, unit, size in (
        (60, "second", 1),
        (3600, "minute", 60),
        (86400 * 2, "hour", 3600),
        (86400 * 7 * 2, "day", 86400),
        (86400 * 30 * 3, "week", 86400 * 7),
        (86400 * 365 * 2, "month", 86400 * 30),
    ):
        if seconds < limit:
            count = int(seconds // size)
            if unit == "second" and count == 1:
                return "1 second ago"
            if count == 1:
                return f"About a{'n' if unit == 'hour' else ''} {unit} ago"
            return f"{count} {unit}s ago"
    return f"{int(seconds // (86400 * 365))} years ago"


def render(template: str, item: Mapping[str, Any]) -> str:
    """A Go template applied to ``item`` (see :mod:`crio.kpod.output`). :raises UsageError:"""
    from crio.kpod.output import render as render_template

    return render_template(template, item)


def print_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    fmt: str | None = None,
    heading: bool = True,
    out: Callable[[str], None] = print,
) -> None:
    """Rows as a Docker-CLI table, JSON lines or a template (see :mod:`crio.kpod.output`)."""
    from crio.kpod.output import print_rows as print_table

    print_table(rows, columns, fmt=fmt, heading=heading, out=out)


def write_json(data: Any, out: Callable[[str], None] = print) -> None:
    out(json.dumps(data, indent=4))


def refuse_tty_output(what: str) -> None:
    if sys.stdout.isatty():
        raise UsageError(f"cowardly refusing to write {what} to a terminal; use -o or redirect")


def parse_filters(filters: Iterable[str], known: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq or key not in known:
            raise UsageError(
                f"invalid filter {item!r}: expected one of {', '.join(k + '=' for k in known)}"
            )
        out.append((key, value))
    return out
