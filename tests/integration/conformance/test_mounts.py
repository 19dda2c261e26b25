"""Volumes, mount propagation, devices and image volumes on runc, crun and in a pod VM.

Propagation is looked at from both ends: a host mount made after the
container started, seen (or not) inside; and for bidirectional, a mount
made in the container seen on the host. A pod VM cannot carry a guest's
mount back to the host (virtiofs carries file operations, not mounts), so
it refuses bidirectional propagation by name instead of differing silently.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from crio.api import api_pb2 as api
from support.conformance import USER_IMAGE, Case
from support.cri import container_config, rpc_error, wait_until

pytestmark = pytest.mark.slow

PRIVILEGED = api.LinuxContainerSecurityContext(privileged=True)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def volume(case: Case) -> Iterator[Path]:
    """A host directory of the test's own, on a shared mount of its own."""
    path = case.node.base / f"vol-{secrets.token_hex(3)}"
    path.mkdir()
    _mount("--bind", str(path), str(path))
    _mount("--make-shared", str(path))
    try:
        yield path
    finally:
        with open("/proc/self/mountinfo") as handle:
            points = [line.split()[4] for line in handle]
        for point in reversed(points):
            if point == str(path) or point.startswith(f"{path}/"):
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _volume(path: Path, propagation: int, readonly: bool = False) -> api.Mount:
    return api.Mount(
        container_path="/vol", host_path=str(path), propagation=propagation, readonly=readonly
    )


def test_bind_mounts_read_write_and_read_only(case: Case, volume: Path) -> None:
    (volume / "from-host").write_text("host data\n")
    rw = case.run(mounts=[_volume(volume, api.PROPAGATION_PRIVATE)], name="rw")
    assert case.exec(rw, ["cat", "/vol/from-host"]).stdout == b"host data\n"
    assert case.exec(rw, ["sh", "-c", "echo container data > /vol/from-c"]).exit_code == 0
    assert (volume / "from-c").read_text() == "container data\n"
    ro = case.run(mounts=[_volume(volume, api.PROPAGATION_PRIVATE, readonly=True)], name="ro")
    reply = case.exec(ro, ["touch", "/vol/nope"])
    assert reply.exit_code != 0 and b"Read-only file system" in reply.stderr


def _host_mount_under(volume: Path) -> Path:
    """A tmpfs mounted under the volume on the host, with a file in it."""
    inner = volume / "inner"
    inner.mkdir(exist_ok=True)
    _mount("-t", "tmpfs", "tmpfs", str(inner))
    (inner / "marker").write_text("mounted on the host\n")
    return inner


def test_private_propagation_keeps_later_host_mounts_out(case: Case, volume: Path) -> None:
    cid = case.run(mounts=[_volume(volume, api.PROPAGATION_PRIVATE)])
    assert case.exec(cid, ["ls", "/vol"]).exit_code == 0
    _host_mount_under(volume)
    # Give a late arrival every chance to show (a VM's file cache revalidates in about 1 s).
    for _ in range(3):
        assert case.exec(cid, ["ls", "/vol/inner"]).stdout == b""


def test_host_to_container_propagation(case: Case, volume: Path) -> None:
    cid = case.run(mounts=[_volume(volume, api.PROPAGATION_HOST_TO_CONTAINER)])
    assert case.exec(cid, ["ls", "/vol"]).exit_code == 0
    _host_mount_under(volume)
    wait_until(
        lambda: case.exec(cid, ["cat", "/vol/inner/marker"]).stdout == b"mounted on the host\n",
        timeout=120,
        what="the host's mount inside the container",
    )


def test_bidirectional_propagation(case: Case, volume: Path) -> None:
    mounts = [_volume(volume, api.PROPAGATION_BIDIRECTIONAL)]
    if case.in_vm:
        config = container_config("shared", security=PRIVILEGED, mounts=mounts)
        error = rpc_error(case.create, case.pod(), config)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "bidirectional" in error.details() and str(volume) in error.details()
        assert "/vol" in error.details()
        return
    cid = case.run(PRIVILEGED, mounts=mounts)
    _host_mount_under(volume)
    wait_until(lambda: case.exec(cid, ["ls", "/vol/inner"]).stdout == b"marker\n", timeout=120)
    assert case.exec(cid, ["mkdir", "/vol/back"]).exit_code == 0
    assert case.exec(cid, ["mount", "-t", "tmpfs", "tmpfs", "/vol/back"]).exit_code == 0
    assert case.exec(cid, ["touch", "/vol/back/from-container"]).exit_code == 0
    wait_until(lambda: (volume / "back" / "from-container").exists(), timeout=120)


def _host_only_device() -> str | None:
    """A device node of this host that a pod VM's kernel does not have."""
    for path in ("/dev/loop-control", "/dev/btrfs-control", "/dev/vda"):
        with contextlib.suppress(OSError):
            mode = os.stat(path).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                return path
    return None


def test_devices(case: Case) -> None:
    fuse = api.Device(container_path="/dev/myfuse", host_path="/dev/fuse", permissions="rw")
    cid = case.run(devices=[fuse])
    assert case.exec(cid, ["stat", "-c", "%F %t:%T", "/dev/myfuse"]).stdout == \
        b"character special file a:e5\n"  # fmt: skip
    other = _host_only_device()
    if other is None:
        return
    extra = api.Device(container_path="/dev/other", host_path=other, permissions="r")
    if case.in_vm:
        error = rpc_error(case.create, case.pod(), container_config("d", devices=[extra]))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "/dev/other" in error.details() and "pod VM" in error.details()
    else:
        cid = case.run(devices=[extra], name="other")
        assert case.exec(cid, ["ls", "/dev/other"]).exit_code == 0


def test_image_volumes_and_files(case: Case) -> None:
    cid = case.create(case.pod(), container_config("img", image=USER_IMAGE), start=True)
    assert case.exec(cid, ["cat", "/data/seed"]).stdout == b"from the image\n"
    assert case.exec(cid, ["sh", "-c", "echo more > /data/more && cat /data/more"]).stdout == \
        b"more\n"  # fmt: skip
