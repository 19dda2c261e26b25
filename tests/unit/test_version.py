"""crio.__version__ is the distribution's version (it is written out, not looked up)."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import crio


def test_the_written_version_is_pyprojects_and_the_installed_one() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert crio.__version__ == declared == importlib.metadata.version("crio")
