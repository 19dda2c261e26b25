"""crio.toml: defaults, drop-ins, overrides, the rendered file, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from crio import config
from crio._toml import dumps_model
from crio.errors import ConfigError

CRIO = str(Path(sys.executable).with_name("crio"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_files(tmp_path: Path) -> None:
    cfg = config.load(str(write(tmp_path / "empty.conf", "")), str(tmp_path))
    assert cfg.crio.root == "/var/lib/containers/storage"
    assert cfg.crio.api.listen == "/var/run/crio/crio.sock"
    assert cfg.crio.runtime.default_runtime == "runc"
    assert set(cfg.crio.runtime.runtimes) == {"runc", "crun"}
    assert cfg.crio.runtime.drop_infra_ctr is True
    assert cfg.crio.runtime.cgroup_manager == "cgroupfs"
    assert "/usr/lib/cni/" in cfg.crio.network.plugin_dirs


def test_rendered_defaults_load_back_to_the_same_model() -> None:
    default = config.Config()
    text = dumps_model(default, "header")
    assert config.Config.model_validate(tomllib.loads(text)) == default
    # Every field carries its description as a comment.
    assert "# The CRI gRPC unix socket." in text
    assert "[crio.runtime.runtimes.runc]" in text


def test_drop_ins_apply_in_lexical_order_and_keep_builtin_handlers(tmp_path: Path) -> None:
    main = write(tmp_path / "crio.conf", '[crio]\nroot = "/srv/main"\n')
    drop = tmp_path / "crio.conf.d"
    drop.mkdir()
    write(drop / "20-b.conf", '[crio]\nroot = "/srv/b"\n')
    write(drop / "10-a.conf", '[crio]\nroot = "/srv/a"\nrunroot = "/run/a"\n')
    write(drop / "30-kata.conf", '[crio.runtime.runtimes.kata]\nruntime_type = "kata"\n')
    write(drop / "ignored.txt", "not toml at all [")
    cfg = config.load(str(main), str(drop))
    assert cfg.crio.root == "/srv/b"
    assert cfg.crio.runtime and cfg.crio.runroot == "/run/a"
    assert set(cfg.crio.runtime.runtimes) == {"runc", "crun", "kata"}
    assert cfg.origin("crio.root") == str(drop / "20-b.conf")
    assert cfg.origin("crio.runtime.runtimes.kata.runtime_type") == str(drop / "30-kata.conf")


def test_overrides_win_over_files(tmp_path: Path) -> None:
    main = write(tmp_path / "crio.conf", '[crio.api]\nlisten = "/run/a.sock"\n')
    cfg = config.load(str(main), str(tmp_path), {"crio.api.listen": "/run/b.sock"})
    assert cfg.crio.api.listen == "/run/b.sock"
    assert cfg.origin("crio.api.listen") == "command line"


def test_handler_extra_keys_are_kept_for_the_plugin(tmp_path: Path) -> None:
    main = write(
        tmp_path / "c.conf",
        '[crio.runtime.runtimes.clear]\nruntime_type = "vm"\naccel = "tcg"\n',
    )
    cfg = config.load(str(main), str(tmp_path))
    assert cfg.crio.runtime.runtimes["clear"].options == {"accel": "tcg"}


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('[crio.runtime]\npids_limit = "abc"\n', "crio.runtime.pids_limit", "got 'abc'"),
        ('[crio.api]\nlisten = "rel/x.sock"\n', "crio.api.listen", "absolute path"),
        ("[crio.bogus]\nx = 1\n", "crio.bogus", "unknown table"),
        ("[crio.runtime]\nbogus = 1\n", "crio.runtime.bogus", "unknown key"),
        ('[crio.runtime]\ndefault_runtime = "nope"\n', "crio.runtime.default_runtime", "'nope'"),
        (
            '[crio.runtime.runtimes.x]\nruntime_type = "Not A Type"\n',
            "crio.runtime.runtimes.x.runtime_type",
            "lowercase word",
        ),
        (
            '[crio.runtime]\ncgroup_manager = "cgroupv3"\n',
            "crio.runtime.cgroup_manager",
            "expected",
        ),
        ('[crio.api]\nstream_idle_timeout = "4 hours"\n', "crio.api.stream_idle_timeout", "4h"),
        ("[crio.api]\nstream_port = 70000\n", "crio.api.stream_port", "65535"),
    ],
)
def test_bad_values_name_file_key_given_and_expected(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = write(tmp_path / "bad.conf", text)
    with pytest.raises(ConfigError) as info:
        config.load(str(path), str(tmp_path))
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message
    assert "\n" not in message


def test_a_bad_drop_in_is_named(tmp_path: Path) -> None:
    main = write(tmp_path / "crio.conf", "[crio]\n")
    drop = tmp_path / "d"
    drop.mkdir()
    write(drop / "50-x.conf", "[crio.network]\nplugin_dirs = 5\n")
    with pytest.raises(ConfigError, match=r"50-x\.conf: crio\.network\.plugin_dirs: "):
        config.load(str(main), str(drop))


def test_missing_or_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "absent.conf"), str(tmp_path))
    bad = write(tmp_path / "broken.conf", "[crio\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(str(bad), str(tmp_path))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("4h", 14400.0), ("1m30s", 90.0), ("250ms", 0.25), ("0", 0.0), ("1.5h", 5400.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["4 h", "h", "5", "1d", "-1s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        config.parse_duration(text)


def test_cli_config_round_trips_through_stdin(tmp_path: Path) -> None:
    first = subprocess.run(
        [CRIO, "--config-dir", str(tmp_path), "config", "--default"],
        capture_output=True,
        text=True,
        check=True,
    )
    second = subprocess.run(
        [CRIO, "--config", "/dev/stdin", "--config-dir", str(tmp_path), "config"],
        input=first.stdout,
        capture_output=True,
        text=True,
        check=True,
    )
    assert second.stdout == first.stdout


def test_cli_broken_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.conf", '[crio.runtime]\nlog_size_max = "big"\n')
    result = subprocess.run(
        [CRIO, "--config", str(path), "--config-dir", str(tmp_path), "config"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"crio: {path}: crio.runtime.log_size_max: got 'big'")
    assert "Traceback" not in result.stderr
