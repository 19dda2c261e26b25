"""bash and zsh completion for kpod and crio, generated from their argparse parsers.

The scripts carry the command table (commands, their options, which
options take a value and their choices) as it is in the parsers, and ask
kpod itself for container and image names where a command takes one::

    python -m crio.completion DIR   # DIR/bash-completion/completions/{kpod,crio},
                                    # DIR/zsh/site-functions/{_kpod,_crio}

``make run``'s install step writes them under ``$(PREFIX)/share``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Command", "bash_script", "table", "write_scripts", "zsh_script"]


@dataclass
class Command:
    """What completion needs to know of one (sub)command."""

    name: str
    help: str = ""
    flags: list[str] = field(default_factory=list)  # options without a value
    valued: list[str] = field(default_factory=list)  # options taking a value
    choices: dict[str, list[str]] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    #: What positional arguments are: "container", "image", "object" or "file".
    operands: str = "file"


def _operands(parser: argparse.ArgumentParser) -> str:
    metavars = " ".join(
        str(a.metavar or a.dest).upper()
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    )
    if "CONTAINER" in metavars and "IMAGE" in metavars:
        return "object"
    if "CONTAINER" in metavars or metavars.startswith("SRC"):
        return "container"
    if "IMAGE" in metavars:
        return "image"
    if metavars.startswith("NAME"):
        return "object"
    return "file" if metavars else "none"


def _command(name: str, help_text: str, parser: argparse.ArgumentParser) -> Command:
    cmd = Command(name, help_text, operands=_operands(parser))
    for action in parser._actions:
        if not action.option_strings:
            continue
        target = cmd.flags if action.nargs == 0 else cmd.valued
        target.extend(action.option_strings)
        for option in action.option_strings:
            cmd.helps[option] = (action.help or "").replace("%(default)s", str(action.default))
            if action.choices:
                cmd.choices[option] = [str(c) for c in action.choices]
    return cmd


def table(parser: argparse.ArgumentParser) -> tuple[Command, list[Command]]:
    """(the top-level command, its subcommands) from a parser."""
    top = _command(parser.prog, parser.description or "", parser)
    subs = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help or "" for c in action._choices_actions}
            for name, sub in action.choices.items():
                subs.append(_command(name, helps.get(name, ""), sub))
    return top, subs


# -- bash ---------------------------------------------------------------------------

_BASH = """\
# bash completion for {prog}, generated from its command definitions by crio.completion.
_{fn}_names() {{
    # Names kpod knows, asked with the global options typed so far (--config, --root ...).
    local kind="$1"
    shift
    case "$kind" in
        container) {prog_kpod} "$@" ps -a --format '{{{{.Names}}}}' 2>/dev/null
                   {prog_kpod} "$@" ps -a --format '{{{{.ID}}}}' 2>/dev/null ;;
        image) {prog_kpod} "$@" images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' 2>/dev/null ;;
        object) _{fn}_names container "$@"; _{fn}_names image "$@" ;;
    esac
}}

_{fn}() {{
    local cur prev words cword
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion -n =: || return
    else
        cur="${{COMP_WORDS[COMP_CWORD]}}"
        prev="${{COMP_WORDS[COMP_CWORD-1]}}"
        words=("${{COMP_WORDS[@]}}")
        cword=$COMP_CWORD
    fi
    local commands={commands}
    local top_flags={top_flags}
    local top_valued={top_valued}
    local i cmd="" at=0
    for ((i = 1; i < cword; i++)); do
        case "${{words[i]}}" in
            -*) [[ " $top_valued " == *" ${{words[i]}} "* ]] && ((i++)) ;;
            *) cmd="${{words[i]}}"; at=$i; break ;;
        esac
    done
    local globals=()
    ((at > 1)) && globals=("${{words[@]:1:at-1}}")
    local flags="" valued="" operands=none choices=""
    if [[ -z "$cmd" ]]; then
        flags="$top_flags"; valued="$top_valued"
        case "$prev" in
{top_choices}
        esac
    else
        case "$cmd" in
{cases}
        esac
    fi
    if [[ -n "$choices" ]]; then
        COMPREPLY=($(compgen -W "$choices" -- "$cur")); return
    fi
    if [[ " $valued " == *" $prev "* ]]; then
        COMPREPLY=($(compgen -f -- "$cur")); return
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags $valued" -- "$cur")); return
    fi
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W "$commands" -- "$cur")); return
    fi
    case "$operands" in
        container|image|object)
            COMPREPLY=($(compgen -W "$(_{fn}_names "$operands" "${{globals[@]}}")" -- "$cur")) ;;
        file) COMPREPLY=($(compgen -f -- "$cur")) ;;
    esac
}}
complete -F _{fn} {prog}
"""


def _choice_cases(cmd: Command, indent: str) -> str:
    lines = []
    for option, values in cmd.choices.items():
        lines.append(f"{indent}{option}) choices={shlex.quote(' '.join(values))} ;;")
    return "\n".join(lines)


def bash_script(parser: argparse.ArgumentParser, kpod: str = "kpod") -> str:
    top, subs = table(parser)
    cases = []
    for cmd in subs:
        inner = _choice_cases(cmd, " " * 20)
        cases.append(
            f"            {shlex.quote(cmd.name)})\n"
            f"                flags={shlex.quote(' '.join(cmd.flags))}\n"
            f"                valued={shlex.quote(' '.join(cmd.valued))}\n"
            f"                operands={cmd.operands}\n"
            + (f'                case "$prev" in\n{inner}\n                esac\n' if inner else "")
            + "                ;;"
        )
    return _BASH.format(
        prog=top.name,
        fn=top.name.replace("-", "_"),
        prog_kpod=kpod,
        commands=shlex.quote(" ".join(c.name for c in subs)),
        top_flags=shlex.quote(" ".join(top.flags)),
        top_valued=shlex.quote(" ".join(top.valued)),
        top_choices=_choice_cases(top, " " * 12) or "            *) ;;",
        cases="\n".join(cases) or "            *) ;;",
    )


# -- zsh ------------------------------------------------------------------------------


def _zq(text: str) -> str:
    """Text inside a single-quoted _arguments spec (no brackets or colons to confuse it)."""
    text = text.replace("'", "'\\''").replace("[", "(").replace("]", ")").replace(":", "\\:")
    return " ".join(text.split())


def _zsh_specs(cmd: Command) -> list[str]:
    specs = []
    for option in cmd.flags:
        specs.append(f"'{option}[{_zq(cmd.helps.get(option, ''))}]'")
    for option in cmd.valued:
        values = cmd.choices.get(option)
        action = f"({' '.join(values)})" if values else "_files"
        specs.append(f"'{option}[{_zq(cmd.helps.get(option, ''))}]:value:{action}'")
    return specs


_ZSH_OPERANDS = {
    "container": "'*:container:_{fn}_containers'",
    "image": "'*:image:_{fn}_images'",
    "object": "'*:name:_{fn}_objects'",
    "file": "'*:file:_files'",
    "none": "",
}


def zsh_script(parser: argparse.ArgumentParser, kpod: str = "kpod") -> str:
    top, subs = table(parser)
    fn = top.name.replace("-", "_")
    described = "\n".join(f"        '{_zq(c.name)}:{_zq(c.help)}'" for c in subs)
    cases = []
    for cmd in subs:
        specs = [*_zsh_specs(cmd), _ZSH_OPERANDS[cmd.operands].format(fn=fn)]
        body = " \\\n                ".join(s for s in specs if s)
        cases.append(
            f"        {shlex.quote(cmd.name)})\n            _arguments \\\n"
            f"                {body} ;;"
        )
    top_specs = " \\\n        ".join(_zsh_specs(top))
    return f"""#compdef {top.name}
# zsh completion for {top.name}, generated from its command definitions by crio.completion.

_{fn}_containers() {{
    local -a names
    names=(${{(f)"$({kpod} ps -a --format '{{{{.Names}}}}' 2>/dev/null)"}})
    compadd -a names
}}
_{fn}_images() {{
    local -a names
    names=(${{(f)"$({kpod} images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' 2>/dev/null)"}})
    compadd -a names
}}
_{fn}_objects() {{ _{fn}_containers; _{fn}_images }}

_{fn}() {{
    local curcontext="$curcontext" state line
    local -a commands
    commands=(
{described}
    )
    _arguments -C \\
        {top_specs} \\
        '1:command:->command' \\
        '*::argument:->argument'
    case $state in
    command) _describe -t commands '{top.name} command' commands ;;
    argument)
        case $words[1] in
{chr(10).join(cases)}
        esac ;;
    esac
}}

_{fn} "$@"
"""


# -- files -----------------------------------------------------------------------------


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from crio.cli import Commands, _parser
    from crio.kpod.cli import build_parser
    from crio.plugins import Plugins

    plugins = Plugins()
    plugins.load_entry_points()
    commands = Commands()
    plugins.add_commands(commands)
    return {"kpod": build_parser(), "crio": _parser(commands)}


def write_scripts(share: Path) -> list[Path]:
    """Write both shells' scripts for kpod and crio under ``share`` (e.g. /usr/local/share)."""
    written = []
    for name, parser in _parsers().items():
        for path, text in (
            (Path(share) / "bash-completion" / "completions" / name, bash_script(parser)),
            (Path(share) / "zsh" / "site-functions" / f"_{name}", zsh_script(parser)),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crio.completion", description="Write bash and zsh completion scripts."
    )
    parser.add_argument("share", type=Path, help="a share directory, e.g. /usr/local/share")
    for path in write_scripts(parser.parse_args(argv).share):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
