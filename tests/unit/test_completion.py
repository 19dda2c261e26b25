"""Shell completion generated from kpod's definitions, typed into real shells under tmux."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio.completion import table, write_scripts
from crio.kpod.cli import build_parser

BIN = str(Path(sys.executable).parent)
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    share = tmp_path_factory.mktemp("share")
    write_scripts(share)
    return share


def test_scripts_carry_every_command_and_option(scripts: Path) -> None:
    bash = (scripts / "bash-completion" / "completions" / "kpod").read_text()
    zsh = (scripts / "zsh" / "site-functions" / "_kpod").read_text()
    _, commands = table(build_parser())
    assert {c.name for c in commands} >= {"ps", "cp", "logs", "exec", "images"}
    for cmd in commands:
        assert f"            {cmd.name})" in bash and f"'{cmd.name}:" in zsh
        for option in [*cmd.flags, *cmd.valued]:
            assert option in bash and f"'{option}[" in zsh
    for shell, name in (
        ("bash", "bash-completion/completions/kpod"),
        ("zsh", "zsh/site-functions/_kpod"),
    ):
        if shutil.which(shell):
            check = subprocess.run(
                [shell, "-n", str(scripts / name)], capture_output=True, text=True
            )
            assert check.returncode == 0, check.stderr


class Tmux:
    """One tmux server of our own (its own socket), running one shell."""

    def __init__(self, shell: list[str], env: dict[str, str]) -> None:
        self.socket = f"kpod-test-{secrets.token_hex(4)}"
        subprocess.run(
            ["tmux", "-L", self.socket, "new-session", "-d", "-x", "160", "-y", "40", *shell],
            check=True,
            env=env,
        )

    def send(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "capture-pane", "-p"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared on the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def bash(scripts: Path, tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None or shutil.which("bash") is None:
        pytest.skip("tmux or bash is not installed (the Makefile's DEB_PACKAGES has them)")
    rc = tmp_path / "bashrc"
    lines = [f"PATH={BIN}:$PATH", "PS1='ready$ '", "bind 'set show-all-if-ambiguous on'"]
    if BASH_COMPLETION.exists():
        lines.append(f"source {BASH_COMPLETION}")
    lines.append(f"source {scripts / 'bash-completion' / 'completions' / 'kpod'}")
    rc.write_text("\n".join(lines) + "\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm"}
    tmux = Tmux(["bash", "--noprofile", "--rcfile", str(rc), "-i"], env)
    try:
        tmux.wait_for("ready$")
        yield tmux
    finally:
        tmux.close()


def test_bash_completes_commands_options_and_choices(bash: Tmux) -> None:
    bash.send("kpod ima", "Tab")
    assert "ready$ kpod images" in bash.wait_for("kpod images")
    bash.send("C-u", "kpod ps --no-t", "Tab")
    bash.wait_for("kpod ps --no-trunc")
    bash.send("C-u", "kpod inspect --type ", "Tab")
    screen = bash.wait_for("container")
    assert all(word in screen for word in ("pod", "image", "all"))
    bash.send("C-u", "kpod --root /tmp lo", "Tab")
    screen = bash.wait_for("logout")
    assert "login" in screen and "logs" in screen


def test_zsh_completes_commands(scripts: Path, tmp_path: Path) -> None:
    if shutil.which("tmux") is None or shutil.which("zsh") is None:
        pytest.skip("tmux or zsh is not installed (the Makefile's DEB_PACKAGES has them)")
    (tmp_path / ".zshrc").write_text(
        f"PATH={BIN}:$PATH\nPS1='ready%% '\n"
        f"fpath=({scripts / 'zsh' / 'site-functions'} $fpath)\n"
        "autoload -Uz compinit && compinit -u\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ZDOTDIR": str(tmp_path),
        "TERM": "xterm",
    }
    tmux = Tmux(["zsh", "-i"], env)
    try:
        tmux.wait_for("ready%")
        tmux.send("kpod unpa", "Tab")
        tmux.wait_for("kpod unpause")
        tmux.send("C-u", "kpod ps --no-t", "Tab")
        tmux.wait_for("kpod ps --no-trunc")
    finally:
        tmux.close()
