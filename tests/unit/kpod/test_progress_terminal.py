"""Progress bars on save and load only when stdout is a terminal (a real pty), never in a pipe."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from crio.storage import Store
from support.images import layer_tar, put_image

KPOD = str(Path(sys.executable).with_name("kpod"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a store holding one image, that image saved as a docker-archive)."""
    base = tmp_path_factory.mktemp("progress")

    async def seed() -> None:
        store = await Store.open(base / "root", base / "run", "vfs")
        try:
            layers = [layer_tar({f"f{i}": bytes([65 + i]) * 100_000}) for i in range(2)]
            await put_image(store, layers, name="localhost/bars:1")
        finally:
            await store.close()

    asyncio.run(seed())
    saved = base / "bars.tar"
    result = _kpod(base, "root", "save", "-q", "-o", str(saved), "localhost/bars:1")
    assert result.returncode == 0, result.stderr
    return base, saved


def _kpod(
    base: Path, root: str, *args: str, stdout: int | None = None
) -> subprocess.CompletedProcess:
    (base / "conf.d").mkdir(exist_ok=True)
    (base / "crio.conf").write_text("")
    flags = ["--config", str(base / "crio.conf"), "--config-dir", str(base / "conf.d")]
    flags += ["--root", str(base / root), "--runroot", str(base / f"{root}-run")]
    return subprocess.run(
        [KPOD, *flags, "--storage-driver", "vfs", *args],
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=120,
    )


def _on_terminal(base: Path, root: str, *args: str) -> bytes:
    main, child = pty.openpty()
    try:
        result = _kpod(base, root, *args, stdout=child)
        os.close(child)
        child = -1
        chunks = []
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the writer side is closed and drained
                break
            if not data:
                break
            chunks.append(data)
        assert result.returncode == 0, result.stderr
        return b"".join(chunks)
    finally:
        os.close(main)
        if child >= 0:
            os.close(child)


def test_bars_on_a_terminal_and_none_in_a_pipe(archive: tuple[Path, Path]) -> None:
    base, saved = archive
    shown = _on_terminal(base, "tty-root", "load", "-i", str(saved))
    assert b"\x1b[2K" in shown and b"=" in shown and b"] " in shown  # redrawn bars
    assert b"Loaded image: localhost/bars:1" in shown
    piped = _kpod(base, "pipe-root", "load", "-i", str(saved))
    assert piped.returncode == 0, piped.stderr
    assert b"\x1b" not in piped.stdout + piped.stderr
    assert b"Copying blob" in piped.stderr and piped.stdout.startswith(b"Loaded image:")
    again = _on_terminal(base, "root", "save", "-o", str(base / "again.tar"), "localhost/bars:1")
    assert b"\x1b[2K" in again
