"""``crio vm-assets`` for real: Debian's kernel package, the initramfs, checksums, cheap reruns."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio_plugins.runtime_clear import assets

pytestmark = pytest.mark.slow

CRIO = str(Path(sys.executable).with_name("crio"))


@pytest.fixture(scope="module")
def deb() -> Iterator[Path]:
    """The kernel package, downloaded once for this module (skip if apt cannot)."""
    work = Path(tempfile.mkdtemp(prefix="crio-deb-", dir="/var/tmp"))
    try:
        try:
            package = assets.resolve_kernel_package()
            subprocess.run(
                ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package],
                cwd=work, check=True, capture_output=True, timeout=600,
            )  # fmt: skip
        except (assets.AssetsError, subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"Debian's kernel package cannot be downloaded here: {exc}")
        yield next(work.glob("*.deb"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _crio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRIO, *args], capture_output=True, text=True, timeout=600)


def test_vm_assets_builds_checks_and_reruns_cheaply(deb: Path, tmp_path: Path) -> None:
    target = tmp_path / "vm-assets"
    built = _crio("vm-assets", "--dir", str(target), "--deb", str(deb))
    assert built.returncode == 0, built.stderr
    manifest = json.loads((target / "manifest.json").read_text())
    for name in ("vmlinux", "initrd.img"):
        assert manifest["files"][name]["sha256"] == assets.sha256_file(target / name)
    assert (target / "vmlinux").read_bytes()[:4] == b"\x7fELF"
    listing = subprocess.run(
        ["busybox", "cpio", "-t"], input=(target / "initrd.img").read_bytes(),
        capture_output=True, check=True,
    ).stdout.decode().split()  # fmt: skip
    assert {"init", "bin/busybox", "lib/modules/virtiofs.ko", "lib/modules/virtio_net.ko"} <= set(
        listing
    )
    release = manifest["kernel_release"]
    assert (target / "modules" / release).is_dir()
    assert "dm_mod" in json.loads((target / "modules" / "modules.json").read_text())
    assert f"release {release}" in built.stdout

    again = _crio("vm-assets", "--dir", str(target), "--verify")
    assert again.returncode == 0 and "are current" in again.stdout
    assert json.loads((target / "manifest.json").read_text()) == manifest  # not rebuilt

    with open(target / "initrd.img", "r+b") as handle:
        handle.seek(100)
        handle.write(b"X")
    broken = _crio("vm-assets", "--dir", str(target), "--verify")
    assert broken.returncode == 1
    assert "sha256" in broken.stderr and "does not match the manifest" in broken.stderr


def test_a_bad_package_file_is_refused_with_the_step(tmp_path: Path) -> None:
    fake = tmp_path / "linux-image-fake_1_amd64.deb"
    fake.write_bytes(b"not a deb")
    result = _crio("vm-assets", "--dir", str(tmp_path / "a"), "--deb", str(fake))
    assert result.returncode == 1
    assert result.stderr.startswith("crio: dpkg-deb -x") and "failed" in result.stderr
    assert not (tmp_path / "a").exists()
