"""Turn a Linux ``bzImage`` (what Debian ships as vmlinuz) into the ELF ``vmlinux``.

qemu's ``microvm`` machine boots an uncompressed ELF kernel through its PVH
entry point. A bzImage carries that ELF compressed inside; the x86 boot
protocol's setup header says where (``payload_offset`` and ``payload_length``
at 0x248, relative to the end of the real-mode setup code), and the payload's
first bytes say how it is compressed. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import lzma
import struct
import zlib

__all__ = ["BzImageError", "compression", "extract_vmlinux", "payload"]

_HDRS_MAGIC = b"HdrS"
_ELF_MAGIC = b"\x7fELF"
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_LZ4_LEGACY_BLOCK = 8 << 20

_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (_LZ4_LEGACY_MAGIC, "lz4"),
    (b"\x5d\x00\x00", "lzma"),
)


class BzImageError(ValueError):
    """The file is not a bzImage crio can unpack; the message says why."""


def payload(image: bytes) -> bytes:
    """The compressed kernel inside ``image`` (boot protocol 2.08 and later)."""
    if len(image) < 0x250 or image[0x202:0x206] != _HDRS_MAGIC:
        raise BzImageError("not a bzImage: no 'HdrS' setup header at offset 0x202")
    (version,) = struct.unpack_from("<H", image, 0x206)
    if version < 0x208:
        raise BzImageError(f"boot protocol {version >> 8}.{version & 0xFF} has no payload fields")
    setup_sects = image[0x1F1] or 4
    start = (setup_sects + 1) * 512
    offset, length = struct.unpack_from("<II", image, 0x248)
    end = start + offset + length
    if length == 0 or end > len(image):
        raise BzImageError(f"payload {offset}+{length} lies outside the {len(image)}-byte image")
    return image[start + offset : end]


def compression(data: bytes) -> str:
    """Name the compression of a kernel payload by its magic bytes."""
    for magic, name in _MAGICS:
        if data.startswith(magic):
            return name
    raise BzImageError(f"unknown kernel compression (payload starts {data[:6].hex()})")


def _lz4_legacy(data: bytes) -> bytes:
    import lz4.block  # only kernels built with CONFIG_KERNEL_LZ4 need it

    # The kernel build appends the uncompressed size (u32 LE) after the stream.
    (want,) = struct.unpack_from("<I", data, len(data) - 4)
    pos, out, total = len(_LZ4_LEGACY_MAGIC), [], 0
    while total < want:
        if pos + 4 > len(data) - 4:
            raise BzImageError(f"lz4 stream ends after {total} of {want} bytes")
        (size,) = struct.unpack_from("<I", data, pos)
        pos += 4
        block = lz4.block.decompress(data[pos : pos + size], uncompressed_size=_LZ4_LEGACY_BLOCK)
        pos += size
        out.append(block)
        total += len(block)
    return b"".join(out)


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _decompress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        # One gzip member; the size trailer the kernel build appends is left over.
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if kind == "lzma":
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)
    if kind == "zstd":
        return _zstd(data)
    return _lz4_legacy(data)


def extract_vmlinux(image: bytes) -> bytes:
    """Return the ELF kernel inside a bzImage (or ``image`` itself if it is already ELF)."""
    if image.startswith(_ELF_MAGIC):
        return image
    data = payload(image)
    kind = compression(data)
    try:
        kernel = _decompress(data, kind)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
        if isinstance(exc, BzImageError):
            raise
        raise BzImageError(f"{kind} payload does not decompress: {exc}") from exc
    if not kernel.startswith(_ELF_MAGIC):
        raise BzImageError(f"the {kind} payload is not an ELF kernel")
    return kernel
