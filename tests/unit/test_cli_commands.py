"""Plugins add ``crio`` subcommands through ``crio_add_commands`` and the Commands registrar."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from crio import cli, config
from crio.cli import Commands
from crio.errors import ConfigError, PluginError
from crio.plugins import Plugins, hookimpl

CRIO = str(Path(sys.executable).with_name("crio"))


class GreetPlugin:
    """A plugin object with one subcommand that reports what it was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @hookimpl
    def crio_add_commands(self, commands: Commands) -> None:
        def arguments(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("who")
            parser.add_argument("--exit", type=int, default=0)

        def run(args: argparse.Namespace, cfg: config.Config) -> int:
            self.seen.append((args.who, cfg.crio.root))
            if args.who == "bad":
                raise ConfigError("cannot greet", key="crio.root")
            return int(args.exit)

        commands.add("greet", help="greet someone", run=run, arguments=arguments)


def _plugins(*objects: object) -> Plugins:
    plugins = Plugins()
    for index, plugin in enumerate(objects):
        plugins.register(plugin, f"test{index}")
    return plugins


def test_a_plugin_command_runs_with_the_loaded_config(tmp_path: Path) -> None:
    plugin = GreetPlugin()
    status = cli.main(
        ["--config-dir", str(tmp_path), "--root", "/srv/x", "greet", "you", "--exit", "3"],
        plugins=_plugins(plugin),
    )
    assert status == 3
    assert plugin.seen == [("you", "/srv/x")]


def test_a_plugin_command_error_is_one_line_and_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        ["--config-dir", str(tmp_path), "greet", "bad"], plugins=_plugins(GreetPlugin())
    )
    assert status == 1
    assert capsys.readouterr().err == "crio: crio.root: cannot greet\n"


def test_the_registrar_refuses_clashes_and_bad_names() -> None:
    commands = Commands()
    run = lambda args, cfg: 0  # noqa: E731
    with commands.adding_for("first"):
        commands.add("greet", help="", run=run)
    with commands.adding_for("second"), pytest.raises(PluginError, match="already added by first"):
        commands.add("greet", help="", run=run)
    with pytest.raises(PluginError, match="one of crio's own"):
        commands.add("config", help="", run=run)
    with pytest.raises(PluginError, match="not a lowercase word"):
        commands.add("Do_It", help="", run=run)
    assert [c.name for c in commands] == ["greet"]


def test_a_plugin_failing_to_add_commands_does_not_break_crio(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def crio_add_commands(self, commands: Commands) -> None:
            commands.add("config", help="steal a built-in", run=lambda a, c: 0)

    plugin = GreetPlugin()
    plugins = _plugins(Broken(), plugin)
    assert cli.main(["--config-dir", str(tmp_path), "greet", "me"], plugins=plugins) == 0
    assert plugin.seen[0][0] == "me"


def test_builtin_plugin_commands_show_in_help() -> None:
    out = subprocess.run([CRIO, "--help"], capture_output=True, text=True, check=True).stdout
    assert "vm-assets" in out
