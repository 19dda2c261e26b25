"""crio opens the store at start: storage_driver picks the driver or stops crio clearly."""

from __future__ import annotations

import os
import subprocess

import pytest

from support.daemon import CrioProcess
from support.images import put_busybox_image


@pytest.fixture
def crio_with(request: pytest.FixtureRequest):
    made: list[CrioProcess] = []

    def make(driver: str | None) -> CrioProcess:
        extra = {} if driver is None else {"crio": {"storage_driver": driver}}
        process = CrioProcess(extra)
        made.append(process)
        return process

    yield make
    for process in made:
        if process.proc is not None and process.proc.poll() is None:
            process.stop()
        subprocess.run(["umount", "-R", "-q", str(process.base / "root" / "overlay")], check=False)
        process.cleanup()


def test_empty_driver_picks_overlay_and_says_so(crio_with) -> None:
    crio = crio_with(None)
    image_id = put_busybox_image(crio.base / "root", crio.base / "runroot")
    crio.start()
    assert crio.stop() == 0
    log = crio.log_text()
    assert "storage_driver is empty: using overlay" in log
    assert "with driver overlay" in log
    assert (crio.base / "root" / "overlay-images" / image_id).is_dir()


def test_vfs_by_name(crio_with) -> None:
    crio = crio_with("vfs")
    crio.start()
    assert crio.stop() == 0
    assert (crio.base / "root" / "vfs-layers" / "layers.lock").exists()


def test_unknown_driver_stops_crio(crio_with) -> None:
    crio = crio_with("zfs-nope")
    crio.start(wait=False)
    assert crio.proc is not None and crio.proc.wait(60) == 1
    last = crio.log_text().strip().splitlines()[-1]
    assert "crio.storage_driver" in last and "zfs-nope" in last


def test_aufs_is_refused_naming_the_kernel_and_suggesting_overlay(crio_with) -> None:
    crio = crio_with("aufs")
    crio.start(wait=False)
    assert crio.proc is not None and crio.proc.wait(60) == 1
    lines = crio.log_text().strip().splitlines()
    assert f"kernel {os.uname().release} has no aufs" in lines[-1]
    assert 'use storage_driver = "overlay"' in lines[-1]
    assert not (crio.base / "root" / "aufs").exists()
