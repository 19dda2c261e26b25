"""README.md's examples without a crio: markers, scripts, crictl files, the VM keys table.

The integration test (tests/integration/test_readme_examples.py) runs them
for real; these checks need no root and catch most drift in a second.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import grpc
import pytest

from crio.api import api_pb2 as api
from crio_plugins.runtime_clear.options import VMOptions
from support.crictl import Crictl, CrictlError, go_code, load_json
from support.readme import (
    README,
    Block,
    Command,
    commands,
    matches,
    parse_blocks,
    parse_tables,
)

KNOWN_PROGRAMS = {"crictl", ".venv/bin/crio", ".venv/bin/kpod", ".venv/bin/pip",
                  ".venv/bin/pytest", "uname"}  # fmt: skip
BLOCKS = parse_blocks(README.read_text())


def test_markers_name_fenced_blocks_once() -> None:
    text = "x\n<!-- example: a.json -->\n```json\n{}\n```\n<!-- example: s -->\n```sh\nls\n```\n"
    blocks = parse_blocks(text)
    assert blocks == {
        "a.json": Block("a.json", "json", "{}\n", 3),
        "s": Block("s", "sh", "ls\n", 7),
    }
    with pytest.raises(ValueError, match="is not before a fence"):
        parse_blocks("<!-- example: a -->\ntext\n")
    with pytest.raises(ValueError, match="never closed"):
        parse_blocks("<!-- example: a -->\n```sh\nls\n")
    with pytest.raises(ValueError, match="marked twice"):
        parse_blocks(text + text)


def test_script_lines_expectations_and_assignments() -> None:
    block = Block("s", "sh", (
        "# a comment line\n"
        "POD=$(crictl runp pod.json)   # boots it\n"
        "crictl inspectp -o go-template --template '{{.a}} # not a comment' $POD  # => clear\n"
        "crictl runp \\\n  --runtime x p.json    # fails: ...InvalidArgument...\n"
    ), 10)  # fmt: skip
    assert commands(block) == [
        Command("crictl runp pod.json", 12, assign="POD"),
        Command("crictl inspectp -o go-template --template '{{.a}} # not a comment' $POD", 13,
                expect="clear"),
        Command("crictl runp    --runtime x p.json", 14, fails="...InvalidArgument..."),
    ]  # fmt: skip


def test_expected_output_matching() -> None:
    listing = "NAME KINDS\ncopydir      storage,events   crio-copydir  0.1.0  loaded\n"
    assert matches("copydir storage,events crio-copydir 0.1.0 loaded", listing)
    assert matches("release ...-cloud-amd64 (...)", "kernel x\nrelease 6.1.0-9-cloud-amd64 (p 1)\n")
    assert not matches("release ...-cloud-amd64", "release 6.18.1-fc\n")
    assert not matches("clear", "unclear\n")
    error = "FATA[0000] x: rpc error: code = InvalidArgument desc = y"
    assert matches("...code = InvalidArgument desc = ...", error)


def test_every_script_uses_programs_the_replay_knows() -> None:
    scripts = [b for b in BLOCKS.values() if b.lang == "sh"]
    assert scripts
    for block in scripts:
        for command in commands(block):
            program = command.text.split()[0]
            assert program in KNOWN_PROGRAMS, f"README line {command.line}: {program}"


def test_every_example_is_a_kind_the_tests_check() -> None:
    for name, block in BLOCKS.items():
        assert block.lang in ("sh", "toml", "json", "yaml", "python"), (name, block.lang)
        if block.lang == "toml":
            tomllib.loads(block.text)
        if block.lang == "json":
            json.loads(block.text)
        if block.lang == "python":
            compile(block.text, name, "exec")


@pytest.mark.parametrize("name", sorted(n for n in BLOCKS if n.endswith(".json")))
def test_crictl_files_are_cri_messages(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(BLOCKS[name].text)
    message = api.PodSandboxConfig() if name.endswith("pod.json") else api.ContainerConfig()
    load_json(path, message)
    assert message.metadata.name


def test_crictl_files_take_numbers_for_enums(tmp_path: Path) -> None:
    path = tmp_path / "pod.json"
    path.write_text('{"metadata": {"name": "a"}, "linux": {"security_context": '
                    '{"namespace_options": {"network": "NODE"}}}}')  # fmt: skip
    with pytest.raises(CrictlError, match="network: crictl takes the number of an enum"):
        load_json(path, api.PodSandboxConfig())
    path.write_text('{"metadata": {"name": "a"}, "log_dir": "/x"}')
    with pytest.raises(CrictlError, match="log_dir"):
        load_json(path, api.PodSandboxConfig())


def test_status_codes_read_as_grpc_go_writes_them() -> None:
    assert go_code(grpc.StatusCode.INVALID_ARGUMENT) == "InvalidArgument"
    assert go_code(grpc.StatusCode.NOT_FOUND) == "NotFound"
    assert go_code(grpc.StatusCode.CANCELLED) == "Canceled"


def test_crictl_replay_refuses_what_it_does_not_do(tmp_path: Path) -> None:
    crictl = Crictl(grpc.insecure_channel("unix:///nonexistent"), tmp_path)
    code, _out, err = crictl.run(["attach", "x"])
    assert code == 1 and "is not a subcommand it knows" in err
    code, _out, err = crictl.run(["exec", "ctr", "ls"])
    assert code == 1 and "with -s (ExecSync) only" in err


def test_the_vm_keys_table_is_the_plugins() -> None:
    rows = parse_tables(README.read_text())["vm-keys"]
    documented = {row[0].strip("`"): row[1].strip("`") for row in rows}
    defaults = {f.name: f.default for f in dataclasses.fields(VMOptions)}
    defaults["kernel_args"] = []
    assert set(documented) == set(defaults)
    for key, default in defaults.items():
        # "(unset)" stands for a key whose absence means something of its own (None).
        cell = documented[key]
        written = None if cell == "(unset)" else tomllib.loads(f"v = {cell}")["v"]
        assert written == default, key
