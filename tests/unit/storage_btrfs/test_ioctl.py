"""The btrfs ioctl numbers and argument structs, byte for byte.

The expected numbers are what ``linux/btrfs.h`` gives when compiled (checked
with gcc against Debian 12's linux-libc-dev).
"""

from __future__ import annotations

import struct

import pytest

from crio_plugins.storage_btrfs import ioctl


def test_request_numbers_match_the_kernel_header() -> None:
    assert ioctl.IOC_SUBVOL_CREATE == 0x5000940E
    assert ioctl.IOC_SNAP_DESTROY == 0x5000940F
    assert ioctl.IOC_INO_LOOKUP == 0xD0009412
    assert ioctl.IOC_SNAP_CREATE_V2 == 0x50009417
    assert ioctl.IOC_SUBVOL_GETFLAGS == 0x80089419
    assert ioctl.IOC_SUBVOL_SETFLAGS == 0x4008941A
    assert ioctl.IOC_QUOTA_CTL == 0xC0109428
    assert ioctl.IOC_QGROUP_CREATE == 0x4010942A
    assert ioctl.IOC_QGROUP_LIMIT == 0x8030942B
    assert ioctl.IOC_FS_INFO == 0x8400941F


def test_vol_args_hold_the_name_after_the_fd() -> None:
    packed = ioctl.pack_vol_args("a" * 64)
    assert len(packed) == 4096
    assert packed[:8] == b"\0" * 8
    assert packed[8:72] == b"a" * 64 and packed[72:] == b"\0" * (4096 - 72)


def test_vol_args_v2_put_the_source_fd_flags_and_name_where_the_kernel_reads_them() -> None:
    packed = ioctl.pack_vol_args_v2("layer", source_fd=7, flags=ioctl.SUBVOL_RDONLY)
    assert len(packed) == 4096
    fd, transid, flags = struct.unpack_from("<qQQ", packed)
    assert (fd, transid, flags) == (7, 0, 2)
    assert packed[24:56] == b"\0" * 32  # size, qgroup_inherit, unused
    assert packed[56:61] == b"layer" and packed[61:] == b"\0" * (4096 - 61)


def test_qgroup_limit_caps_the_referenced_bytes() -> None:
    packed = ioctl.pack_qgroup_limit(8 << 20)
    assert len(packed) == 48
    assert struct.unpack("<6Q", packed) == (0, 1, 8 << 20, 0, 0, 0)


@pytest.mark.parametrize("name", ["", "a/b", "nul\0", "x" * 4040])
def test_bad_subvolume_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="subvolume name"):
        ioctl.pack_vol_args_v2(name, 3)
