"""Run ``kpod`` against a test crio's configuration: in this process (fast) or as the command."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

from support.daemon import CrioProcess

__all__ = ["KPOD", "kpod", "run_kpod"]

KPOD = str(Path(sys.executable).with_name("kpod"))


def _base(crio: CrioProcess) -> list[str]:
    return ["--config", str(crio.config), "--config-dir", str(crio.base)]


def run_kpod(
    crio: CrioProcess, *args: str, input: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real ``kpod`` command (its own process: exit status, stdin, terminals)."""
    result = subprocess.run(
        [KPOD, *_base(crio), *args], input=input, capture_output=True, timeout=timeout
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )


def kpod(crio: CrioProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``kpod ARGS`` run by :func:`crio.kpod.cli.main` in this process (no interpreter start)."""
    from crio.kpod.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*_base(crio), *args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(["kpod", *args], code, out.getvalue(), err.getvalue())
