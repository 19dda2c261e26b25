"""VMs that cannot come up: the harness raises with the reason and leaves nothing behind."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio.errors import OCIRuntimeError
from crio_plugins.runtime_clear.vm import VM, VMSpec
from support.vm import vm_assets_or_skip

pytestmark = pytest.mark.slow


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="crio-vm-", dir="/tmp"))
    try:
        yield path
    finally:
        assert str(path) not in Path("/proc/self/mountinfo").read_text(), "a mount was left"
        shutil.rmtree(path, ignore_errors=True)


def test_a_guest_whose_init_dies_is_reported_as_a_kernel_panic(base: Path) -> None:
    assets = vm_assets_or_skip()
    spec = VMSpec(
        run_dir=base / "vm",
        kernel=assets.kernel,
        initrd=assets.initrd,
        kernel_args=("crio.python=/nonexistent/python3",),
    )
    with pytest.raises(OCIRuntimeError, match="died while booting: guest kernel panic"):
        asyncio.run(VM.boot(spec, timeout=240))


def test_qemu_refusing_the_kernel_is_reported_with_its_message(base: Path) -> None:
    assets = vm_assets_or_skip()
    garbage = base / "not-a-kernel"
    garbage.write_bytes(b"\x00" * 4096)
    spec = VMSpec(run_dir=base / "vm", kernel=garbage, initrd=assets.initrd)
    with pytest.raises(
        OCIRuntimeError, match=r"died while booting: qemu exited with status 1: .*kernel"
    ):
        asyncio.run(VM.boot(spec, timeout=60))
