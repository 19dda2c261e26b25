"""Run ``kpod`` against a test crio's configuration: in this process (fast) or as the command."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
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
    """``kpod ARGS`` run by :func:`crio.kpod.cli.main` in this process (no interpreter start).

    Output is captured at the file descriptors (kpod writes container output with
    ``os.write``); stdin stays this process's (use :func:`run_kpod` to feed it).
    """
    from crio.kpod.cli import main

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        text_out = open(1, "w", closefd=False)  # noqa: SIM115 (flushed and dropped below)
        text_err = open(2, "w", closefd=False)  # noqa: SIM115
        try:
            with contextlib.redirect_stdout(text_out), contextlib.redirect_stderr(text_err):
                try:
                    code = main([*_base(crio), *args])
                except SystemExit as exc:
                    code = int(exc.code or 0)
                text_out.flush()
                text_err.flush()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            ["kpod", *args],
            code,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
