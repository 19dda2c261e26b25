"""An ACPI SSDT that declares microvm's empty virtio-mmio transports (pure: bytes out).

qemu's ``microvm`` machine has 24 virtio-mmio transports, but its DSDT only
names those with a device plugged in, so a guest never learns of the others.
A VM restored from a template needs devices the template could not have
(vhost-user-fs is not migratable in qemu 7.2; the NICs are the pod's). The
template's initramfs therefore carries this table (the kernel's ACPI table
upgrade reads ``kernel/firmware/acpi/*.aml`` from an uncompressed initrd): it
declares the reserved transports as ``LNRO0005`` devices, exactly as qemu
declares the used ones. At boot each probes empty (``virtio_mmio`` leaves a
transport with device ID 0 alone); after the restore, when qemu has the
pod's device on it, the agent binds the driver and the device appears.

Layout facts (qemu 7.2 ``hw/i386/microvm.c`` and ``acpi-microvm.c``, with the
second IOAPIC, which is on by default): transport N sits at
``0xfeb00000 + N * 0x200`` (512 bytes) on GSI ``24 + N``, level-triggered,
active high; qemu calls the device ``VRnn`` with ``_UID`` N under ``\\_SB``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

__all__ = [
    "DEVICE_PREFIX",
    "TRANSPORTS",
    "device_name",
    "pkg_length",
    "ssdt_for_transports",
    "transport_base",
    "transport_gsi",
]

#: How many virtio-mmio transports microvm has (with its second IOAPIC).
TRANSPORTS = 24
MMIO_BASE = 0xFEB00000
MMIO_SIZE = 0x200
GSI_BASE = 24
#: Our devices' names: ``CRnn`` (qemu's own are ``VRnn``; no clash either way).
DEVICE_PREFIX = "CR"

_SCOPE_OP = 0x10
_NAME_OP = 0x08
_BUFFER_OP = 0x11
_STRING_PREFIX = 0x0D
_BYTE_PREFIX = 0x0A
_DWORD_PREFIX = 0x0C
_ONE_OP = 0x01
_EXT_PREFIX = 0x5B
_DEVICE_OP = 0x82


def transport_base(index: int) -> int:
    _check_index(index)
    return MMIO_BASE + index * MMIO_SIZE


def transport_gsi(index: int) -> int:
    _check_index(index)
    return GSI_BASE + index


def device_name(index: int) -> str:
    """The ACPI path of our device for transport ``index`` (as in sysfs ``firmware_node/path``)."""
    _check_index(index)
    return f"\\_SB_.{DEVICE_PREFIX}{index:02d}"


def _check_index(index: int) -> None:
    if not 0 <= index < TRANSPORTS:
        raise ValueError(f"virtio-mmio transport {index} does not exist (0..{TRANSPORTS - 1})")


def pkg_length(content: int) -> bytes:
    """AML PkgLength for ``content`` bytes that follow it (the length counts itself)."""
    if content + 1 < 0x40:
        return bytes([content + 1])
    for extra in (1, 2, 3):
        total = content + 1 + extra
        if total < 1 << (4 + 8 * extra):
            rest = (total >> 4).to_bytes(extra, "little")
            return bytes([(extra << 6) | (total & 0x0F)]) + rest
    raise ValueError(f"AML package of {content} bytes is too long")


def _name_seg(name: str) -> bytes:
    raw = name.encode("ascii")
    if len(raw) != 4:
        raise ValueError(f"ACPI name segment {name!r} is not 4 characters")
    return raw


def _name(name: str, value: bytes) -> bytes:
    return bytes([_NAME_OP]) + _name_seg(name) + value


def _integer(value: int) -> bytes:
    if value == 1:
        return bytes([_ONE_OP])
    if 0 <= value <= 0xFF:
        return bytes([_BYTE_PREFIX, value])
    return bytes([_DWORD_PREFIX]) + struct.pack("<I", value)


def _string(value: str) -> bytes:
    return bytes([_STRING_PREFIX]) + value.encode("ascii") + b"\0"


def _resources(base: int, size: int, gsi: int) -> bytes:
    memory = struct.pack("<BHBII", 0x86, 9, 1, base, size)  # Memory32Fixed, read-write
    # Extended Interrupt: consumer, level-triggered, active high, exclusive; one GSI.
    interrupt = struct.pack("<BHBBI", 0x89, 6, 0x01, 1, gsi)
    end = bytes([0x79, 0])
    template = memory + interrupt + end
    body = _integer(len(template)) + template
    return bytes([_BUFFER_OP]) + pkg_length(len(body)) + body


def _device(index: int) -> bytes:
    body = (
        _name_seg(f"{DEVICE_PREFIX}{index:02d}")
        + _name("_HID", _string("LNRO0005"))
        + _name("_UID", _integer(index))
        + _name("_CCA", _integer(1))
        + _name("_CRS", _resources(transport_base(index), MMIO_SIZE, transport_gsi(index)))
    )
    return bytes([_EXT_PREFIX, _DEVICE_OP]) + pkg_length(len(body)) + body


def ssdt_for_transports(indexes: Iterable[int]) -> bytes:
    """An SSDT declaring ``LNRO0005`` devices for these transports, checksummed."""
    devices = b"".join(_device(index) for index in sorted(set(indexes)))
    scope_body = b"\\" + _name_seg("_SB_") + devices
    body = bytes([_SCOPE_OP]) + pkg_length(len(scope_body)) + scope_body
    header = struct.pack(
        "<4sIBB6s8sI4sI", b"SSDT", 36 + len(body), 2, 0, b"CRIO  ", b"VIRTMMIO", 1, b"CRIO", 1
    )
    table = bytearray(header + body)
    table[9] = -sum(table) & 0xFF
    return bytes(table)
