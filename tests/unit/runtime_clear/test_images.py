"""Pure builders of the VM assets: the newc initramfs, vmlinux out of a bzImage, module order."""

from __future__ import annotations

import gzip
import lzma
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from crio_plugins.runtime_clear._bzimage import BzImageError, compression, extract_vmlinux
from crio_plugins.runtime_clear._cpio import CpioEntry, directory, file, symlink, write_newc
from crio_plugins.runtime_clear._initramfs import INIT_SCRIPT, build_initramfs
from crio_plugins.runtime_clear._modules import (
    ModuleError,
    dependencies,
    load_order,
    modinfo,
    module_name,
)
from crio_plugins.runtime_clear.assets import _is_static

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
needs_busybox = pytest.mark.skipif(
    not Path(BUSYBOX).exists(), reason="busybox (Debian busybox-static) is not installed"
)

# -- cpio ----------------------------------------------------------------------------


def _cpio_list(archive: bytes) -> list[str]:
    done = subprocess.run([BUSYBOX, "cpio", "-t"], input=archive, capture_output=True, check=True)
    return done.stdout.decode().split()


@needs_busybox
def test_newc_archive_is_read_back_by_busybox_cpio(tmp_path: Path) -> None:
    archive = write_newc(
        [
            directory("bin"),
            file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755),
            symlink("bin/sh", "hello"),
            file("odd", b"x" * 5),  # a length that needs padding
            CpioEntry("console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        ]
    )
    assert _cpio_list(archive) == ["bin", "bin/hello", "bin/sh", "odd", "console"]
    subprocess.run(
        [BUSYBOX, "cpio", "-i", "-d", "-m"], input=archive, cwd=tmp_path, check=True,
        capture_output=True,
    )  # fmt: skip
    assert (tmp_path / "bin/hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "bin/hello").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin/sh").readlink() == Path("hello")
    assert (tmp_path / "odd").read_bytes() == b"xxxxx"


def test_newc_layout_is_aligned_and_deterministic() -> None:
    entries = [directory("a"), file("a/b", b"abc")]
    archive = write_newc(entries)
    assert archive == write_newc(entries)
    assert archive.startswith(b"070701") and len(archive) % 4 == 0
    assert b"TRAILER!!!\x00" in archive[-124:]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([file("a/b", b"")], "before its directory"),
        ([file("a", b""), file("a", b"")], "appears twice"),
    ],
)
def test_newc_refuses_bad_orders(entries: list[CpioEntry], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_newc(entries)


@pytest.mark.parametrize(
    ("name", "mode", "message"),
    [
        ("/abs", stat.S_IFREG, "relative"),
        ("a/../b", stat.S_IFREG, "relative"),
        ("fifo", stat.S_IFIFO, "unsupported file type"),
    ],
)
def test_cpio_entries_check_their_fields(name: str, mode: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CpioEntry(name, mode)
    with pytest.raises(ValueError, match="only files and symlinks"):
        CpioEntry("d", stat.S_IFDIR | 0o755, b"data")


@needs_busybox
def test_initramfs_holds_init_busybox_and_modules_in_order() -> None:
    busybox = Path(BUSYBOX).read_bytes()
    archive = build_initramfs(busybox, [("virtio_ring", b"ko1"), ("virtio", b"ko2")])
    names = _cpio_list(archive)
    assert {"init", "bin/busybox", "dev/console", "newroot", "lib/modules/load-order"} <= set(names)
    assert names.index("lib/modules/virtio_ring.ko") < names.index("lib/modules/virtio.ko")
    assert b"virtio_ring\nvirtio\n" in archive
    assert INIT_SCRIPT.encode() in archive


@needs_busybox
def test_static_busybox_is_told_from_a_dynamic_binary() -> None:
    assert _is_static(Path(BUSYBOX).read_bytes())
    assert not _is_static(Path("/bin/sh").resolve().read_bytes())


# -- bzImage -------------------------------------------------------------------------

ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 57 + b"kernel text" * 100


def _bzimage(payload: bytes, setup_sects: int = 4) -> bytes:
    """A minimal image with a boot-protocol 2.08+ header pointing at ``payload``."""
    image = bytearray((setup_sects + 1) * 512)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x20F)
    offset = 0x100
    struct.pack_into("<II", image, 0x248, offset, len(payload))
    image += b"\x00" * offset + payload
    return bytes(image)


def _size_trailer(data: bytes, raw: bytes) -> bytes:
    return data + struct.pack("<I", len(raw))


def _lz4_legacy(raw: bytes) -> bytes:
    import lz4.block

    out = b"\x02\x21\x4c\x18"
    for start in range(0, len(raw), 8 << 20):
        block = lz4.block.compress(raw[start : start + (8 << 20)], store_size=False)
        out += struct.pack("<I", len(block)) + block
    return out


@pytest.mark.parametrize(
    ("kind", "compress"),
    [
        ("gzip", gzip.compress),
        ("xz", lambda raw: lzma.compress(raw, format=lzma.FORMAT_XZ)),
        ("lzma", lambda raw: lzma.compress(raw, format=lzma.FORMAT_ALONE)),
        ("lz4", _lz4_legacy),
    ],
)
def test_vmlinux_comes_out_of_each_compression(kind: str, compress: object) -> None:
    payload = _size_trailer(compress(ELF), ELF)  # type: ignore[operator]
    assert compression(payload) == kind
    assert extract_vmlinux(_bzimage(payload)) == ELF


def test_an_elf_kernel_is_returned_as_it_is() -> None:
    assert extract_vmlinux(ELF) == ELF


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"\x00" * 1024, "no 'HdrS'"),
        (_bzimage(b"\x00\x01\x02\x03payload"), "unknown kernel compression"),
        (_bzimage(gzip.compress(b"not an elf")), "not an ELF kernel"),
        (_bzimage(b"\x1f\x8b garbage"), "does not decompress"),
    ],
)
def test_bad_images_are_refused_with_the_reason(image: bytes, message: str) -> None:
    with pytest.raises(BzImageError, match=message):
        extract_vmlinux(image)


def test_payload_outside_the_image_is_refused() -> None:
    image = bytearray(_bzimage(gzip.compress(ELF)))
    struct.pack_into("<II", image, 0x248, 0x100, 10**9)
    with pytest.raises(BzImageError, match="outside"):
        extract_vmlinux(bytes(image))


# -- modules -------------------------------------------------------------------------


def _elf_with_modinfo(info: bytes) -> bytes:
    """A 64-bit ELF object with sections: null, .modinfo, .shstrtab."""
    names = b"\x00.modinfo\x00.shstrtab\x00"
    header_size, section_size = 64, 64
    data = info + names
    shoff = header_size + len(data)
    elf = bytearray(b"\x7fELF\x02\x01\x01" + b"\x00" * 9)
    elf += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)
    elf += data
    sections = [
        (0, 0, 0, 0),
        (1, 1, header_size, len(info)),  # .modinfo
        (10, 3, header_size + len(info), len(names)),  # .shstrtab
    ]
    for name, kind, offset, size in sections:
        elf += struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)
    assert len(elf) == shoff + 3 * section_size
    return bytes(elf)


def test_modinfo_and_dependencies_are_read_from_the_section() -> None:
    ko = _elf_with_modinfo(b"license=GPL\x00depends=virtio,virtio_ring\x00alias=a\x00alias=b\x00")
    assert modinfo(ko)["alias"] == ["a", "b"]
    assert dependencies(ko) == ("virtio", "virtio_ring")
    assert dependencies(_elf_with_modinfo(b"depends=\x00")) == ()


def test_a_file_without_modinfo_is_refused() -> None:
    with pytest.raises(ModuleError, match="64-bit little-endian ELF"):
        modinfo(b"MZ not elf")


def test_module_names_fold_dashes_and_suffixes() -> None:
    assert module_name("kernel/drivers/char/hw_random/virtio-rng.ko") == "virtio_rng"
    assert module_name("dm-mod.ko.xz") == "dm_mod"


def test_load_order_puts_dependencies_first_once() -> None:
    deps = {
        "virtio_ring": [],
        "virtio": ["virtio_ring"],
        "virtio_net": ["virtio_ring", "virtio", "net_failover"],
        "net_failover": ["failover"],
        "failover": [],
        "virtio_mmio": ["virtio", "virtio_ring"],
    }
    order = load_order(["virtio_mmio", "virtio_net"], deps)
    assert order == [
        "virtio_ring",
        "virtio",
        "virtio_mmio",
        "failover",
        "net_failover",
        "virtio_net",
    ]


def test_load_order_names_missing_modules_and_cycles() -> None:
    with pytest.raises(
        ModuleError, match="module b is not in the kernel package \\(needed by a\\)"
    ):
        load_order(["a"], {"a": ["b"]})
    with pytest.raises(ModuleError, match="cycle: a -> b -> a"):
        load_order(["a"], {"a": ["b"], "b": ["a"]})
