"""Directory claims: a second crio on one of the first one's directories refuses to start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crio.claims import claim, claimed_paths, lock_holder
from crio.config import Config
from crio.errors import ConfigError


def _config(base: Path) -> Config:
    attach = base / "run"
    return Config.model_validate(
        {
            "crio": {
                "state_dir": str(base / "lib"),
                "runroot": str(base / "storage"),
                "runtime": {
                    "container_exits_dir": str(attach / "exits"),
                    "container_attach_socket_dir": str(attach),
                    "namespaces_dir": str(attach / "ns"),
                },
            }
        }
    )


def test_a_second_claim_on_a_shared_directory_is_refused_naming_it(tmp_path: Path) -> None:
    first = claim(claimed_paths(_config(tmp_path / "a"), []))
    try:
        # Another crio with its own everything except the exits directory.
        other = _config(tmp_path / "b")
        other.crio.runtime.container_exits_dir = str(tmp_path / "a" / "run" / "exits")
        with pytest.raises(ConfigError) as refused:
            claim(claimed_paths(other, []))
        assert refused.value.key == "crio.runtime.container_exits_dir"
        assert str(tmp_path / "a" / "run" / "exits") in str(refused.value)
        assert f"another crio (pid {os.getpid()})" in str(refused.value)
        # Nothing of the refused claim stays held: its own directories are free.
        claim(claimed_paths(_config(tmp_path / "b"), [])).release()
    finally:
        first.release()
    claim(claimed_paths(_config(tmp_path / "a"), [])).release()


def test_nested_and_repeated_paths_are_claimed_once(tmp_path: Path) -> None:
    same = str(tmp_path / "x")
    claims = claim([("k1", same), ("k2", same + "/"), ("k3", str(tmp_path / "x" / "y"))])
    try:
        assert len(claims.fds) == 2
        assert lock_holder(os.stat(same)) == os.getpid()
    finally:
        claims.release()
    assert lock_holder(os.stat(same)) == 0
