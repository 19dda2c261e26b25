"""The ``crio`` command: the daemon and its subcommands.

``crio`` alone runs the daemon; ``crio config`` prints the configuration as
commented TOML, ``crio plugins`` lists the plugins found, ``crio version``
prints versions. Plugins add their own subcommands through the
``crio_add_commands`` hook and the :class:`Commands` registrar. Any
:class:`~crio.errors.CrioError` ends the process with one line on stderr and
exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from crio import __version__, config, logfmt
from crio._toml import dumps_model
from crio.errors import ConfigError, CrioError, PluginError
from crio.plugins import Plugins

__all__ = ["Command", "Commands", "main"]

log = logging.getLogger("crio")

LOG_LEVELS = {
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}

#: Command-line flags that override a crio.toml key: (flag, dotted key, type, help).
_OVERRIDES: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    ("--root", "crio.root", str, "storage root directory"),
    ("--runroot", "crio.runroot", str, "storage run-time directory"),
    ("--storage-driver", "crio.storage_driver", str, "graph driver (overlay, vfs, ...)"),
    ("--log-dir", "crio.log_dir", str, "default container log directory"),
    ("--state-dir", "crio.state_dir", str, "directory of crio's pod and container records"),
    ("--listen", "crio.api.listen", str, "CRI unix socket path"),
    ("--stream-address", "crio.api.stream_address", str, "streaming server address"),
    ("--stream-port", "crio.api.stream_port", int, "streaming server port (0: any free)"),
    ("--default-runtime", "crio.runtime.default_runtime", str, "default runtime handler"),
    ("--cgroup-manager", "crio.runtime.cgroup_manager", str, "cgroupfs or systemd"),
    ("--conmon", "crio.runtime.conmon", str, "path to conmon"),
    ("--container-exits-dir", "crio.runtime.container_exits_dir", str, "conmon exit files"),
    (
        "--container-attach-socket-dir",
        "crio.runtime.container_attach_socket_dir",
        str,
        "conmon attach sockets",
    ),
    ("--namespaces-dir", "crio.runtime.namespaces_dir", str, "pinned namespaces"),
    ("--pause-image", "crio.image.pause_image", str, "infra container image"),
    ("--signature-policy", "crio.image.signature_policy", str, "policy.json path"),
    ("--registries-conf", "crio.image.registries_conf", str, "registries.conf path"),
    ("--network-dir", "crio.network.network_dir", str, "CNI config directory"),
    ("--cni-default-network", "crio.network.cni_default_network", str, "CNI network name"),
)
_LIST_OVERRIDES: tuple[tuple[str, str, str], ...] = (
    ("--storage-opt", "crio.storage_option", "driver option (repeatable)"),
    ("--plugin-dir", "crio.network.plugin_dirs", "CNI plugin directory (repeatable)"),
    ("--insecure-registry", "crio.image.insecure_registries", "insecure registry (repeatable)"),
)


_BUILTIN_COMMANDS = ("check", "config", "plugins", "status", "version")
_COMMAND_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand a plugin added (see :meth:`Commands.add`)."""

    name: str
    help: str
    run: Callable[[argparse.Namespace, config.Config], int]
    arguments: Callable[[argparse.ArgumentParser], None] | None
    plugin: str


class Commands:
    """The registrar ``crio_add_commands`` receives: plugins add subcommands here.

    It checks what it is given when it is given, so a clash or a bad name is
    reported against the plugin that caused it.
    """

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._plugin = ""

    @contextlib.contextmanager
    def adding_for(self, plugin: str) -> Iterator[None]:
        """Attribute the commands added inside the block to ``plugin``."""
        self._plugin = plugin
        try:
            yield
        finally:
            self._plugin = ""

    def add(
        self,
        name: str,
        *,
        help: str,
        run: Callable[[argparse.Namespace, config.Config], int],
        arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    ) -> None:
        """Add ``crio NAME``.

        :param name: lowercase letters, digits and ``-``, starting with a letter.
        :param help: one line for ``crio --help``.
        :param run: called with the parsed arguments and the loaded
            configuration; returns the exit status.
        :param arguments: adds the subcommand's own arguments to its parser.
        :raises PluginError: the name is malformed or already taken.
        """
        who = self._plugin or "an unnamed plugin"
        if not _COMMAND_NAME.fullmatch(name):
            raise PluginError(f"plugin {who}: command name {name!r} is not a lowercase word")
        if name in _BUILTIN_COMMANDS:
            raise PluginError(f"plugin {who}: command {name!r} is one of crio's own")
        if name in self._commands:
            owner = self._commands[name].plugin
            raise PluginError(f"plugin {who}: command {name!r} is already added by {owner}")
        self._commands[name] = Command(name, help, run, arguments, who)

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._commands.values(), key=lambda c: c.name))

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)


def _parser(commands: Commands | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crio", description="A Kubernetes CRI v1 container runtime (after CRI-O)."
    )
    parser.add_argument("--config", help=f"main config file (default {config.DEFAULT_CONFIG_FILE})")
    parser.add_argument(
        "--config-dir", help=f"drop-in directory (default {config.DEFAULT_CONFIG_DIR})"
    )
    parser.add_argument(
        "--log-level", default="info", choices=sorted(LOG_LEVELS), help="log verbosity"
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=logfmt.FORMATS,
        help="crio's own log: text lines, or JSON lines with rpc, pod, container, duration, code",
    )
    parser.add_argument("--version", action="version", version=f"crio {__version__}")
    for flag, _key, kind, text in _OVERRIDES:
        parser.add_argument(flag, type=kind, help=text)
    for flag, _key, text in _LIST_OVERRIDES:
        parser.add_argument(flag, action="append", help=text)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    show = sub.add_parser("config", help="print the configuration as commented TOML")
    show.add_argument(
        "--default", action="store_true", help="print the built-in defaults, ignoring files"
    )
    plugins = sub.add_parser("plugins", help="list the plugins found and whether they loaded")
    plugins.add_argument("--format", choices=("table", "json"), default="table")
    sub.add_parser("version", help="print crio's version")
    check = sub.add_parser(
        "check",
        help="report store and state consistency and what crashes left; --repair fixes it",
    )
    check.add_argument(
        "--repair",
        action="store_true",
        help="finish interrupted operations, release orphans, repair the store (crio stopped)",
    )
    check.add_argument("--format", choices=("text", "json"), default="text")
    status = sub.add_parser(
        "status", help="ask a running crio through its inspection API (info, config, containers)"
    )
    status.add_argument(
        "--socket", help="the inspection socket (default: [crio.api] inspect_listen)"
    )
    what = status.add_subparsers(dest="status_command", metavar="WHAT", required=True)
    what.add_parser("info", help="storage and cgroup driver (GET /info)")
    what.add_parser("config", help="the configuration crio runs with (GET /config)")
    containers = what.add_parser(
        "containers", aliases=["container", "c"], help="one container (GET /containers/ID)"
    )
    containers.add_argument("id", help="the container's id")
    for command in commands or ():
        added = sub.add_parser(command.name, help=command.help, description=command.help)
        if command.arguments is not None:
            command.arguments(added)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for flag, key, _kind, _text in _OVERRIDES:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            found[key] = value
    for flag, key, _text in _LIST_OVERRIDES:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value:
            found[key] = value
    return found


def _load(args: argparse.Namespace) -> config.Config:
    return config.load(args.config, args.config_dir, _overrides(args))


def _setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logfmt.formatter(fmt))
    logging.basicConfig(level=LOG_LEVELS[level], handlers=[handler])


def _print_plugins(plugins: Plugins, fmt: str) -> None:
    infos = plugins.infos()
    if fmt == "json":
        rows = [
            {
                "name": i.name,
                "target": i.target,
                "kinds": list(i.kinds),
                "distribution": i.distribution,
                "version": i.version,
                "loaded": i.loaded,
                "error": i.error,
            }
            for i in infos
        ]
        print(json.dumps(rows, indent=2))
        return
    table = [("NAME", "KINDS", "DISTRIBUTION", "VERSION", "STATUS")]
    for i in infos:
        status = "loaded" if i.loaded else f"not loaded: {i.error}"
        table.append((i.name, ",".join(i.kinds) or "-", i.distribution, i.version, status))
    widths = [max(len(row[c]) for row in table) for c in range(4)]
    for row in table:
        print("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row[:4])) + "  " + row[4])


def _run_check(args: argparse.Namespace, cfg: config.Config, plugins: Plugins) -> int:
    """Exit status 0: nothing (left) to repair; 1: problems remain (listed)."""
    from crio.check import check

    report = asyncio.run(check(cfg, plugins, repair=args.repair))
    if args.format == "json":
        print(report.to_json())
    else:
        for line in report.repaired:
            print(f"repaired: {line}")
        for line in report.problems:
            print(f"problem: {line}")
        print(
            f"crio check: {len(report.problems)} problem(s)"
            + (f", {len(report.repaired)} repaired" if args.repair else "")
        )
    return 1 if report.problems else 0


def _run_status(args: argparse.Namespace, cfg: config.Config) -> int:
    from pathlib import Path

    from crio.inspect import fetch, inspect_socket

    socket_path = Path(args.socket) if args.socket else inspect_socket(cfg)
    command = args.status_command
    path = (
        f"/containers/{args.id}" if command in ("containers", "container", "c") else f"/{command}"
    )
    code, body = fetch(socket_path, path)
    text = body.decode("utf-8", "replace")
    if code != 200:
        print(f"crio status: {text.strip()}", file=sys.stderr)
        return 1
    if command != "config":
        text = json.dumps(json.loads(text), indent=2) + "\n"
    print(text, end="")
    return 0


def _run_daemon(args: argparse.Namespace, cfg: config.Config, plugins: Plugins) -> None:
    from crio import daemon  # grpc and the stubs load only for the daemon

    def reload() -> config.Config:
        new = _load(args)
        logging.getLogger().setLevel(LOG_LEVELS[args.log_level])
        return new

    asyncio.run(daemon.serve(cfg, plugins, reload=reload))


def main(argv: Sequence[str] | None = None, plugins: Plugins | None = None) -> int:
    """Run ``crio``; ``plugins`` (already loaded) replaces entry-point discovery."""
    if plugins is None:
        plugins = Plugins()
        plugins.load_entry_points()
    commands = Commands()
    plugins.add_commands(commands)
    args = _parser(commands).parse_args(argv)
    try:
        if args.command == "version":
            print(f"crio version {__version__}")
            return 0
        if args.command == "config" and args.default:
            print(dumps_model(config.Config(), _HEADER), end="")
            return 0
        cfg = _load(args)
        if args.command == "config":
            print(dumps_model(cfg, _HEADER), end="")
            return 0
        _setup_logging(args.log_level, args.log_format)
        if args.command == "plugins":
            _print_plugins(plugins, args.format)
            return 0
        if args.command == "check":
            return _run_check(args, cfg, plugins)
        if args.command == "status":
            return _run_status(args, cfg)
        command = commands.get(args.command or "")
        if command is not None:
            return command.run(args, cfg)
        try:
            _run_daemon(args, cfg, plugins)
        except ConfigError as exc:
            if exc.key and not exc.file and cfg.origin(exc.key):
                raise ConfigError(exc.detail, file=cfg.origin(exc.key), key=exc.key) from None
            raise
        return 0
    except CrioError as exc:
        print(f"crio: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


_HEADER = """\
crio.toml: the configuration of crio, a Kubernetes CRI runtime.
Read from /etc/crio/crio.conf, then /etc/crio/crio.conf.d/*.conf in lexical
order; command-line flags override both. Every key is shown with its value."""


if __name__ == "__main__":
    sys.exit(main())
