"""Thin-pool tables, messages, status lines, names and metadata files, byte for byte."""

from __future__ import annotations

import pytest

from crio.errors import ConfigError
from crio_plugins.storage_devicemapper import dm
from crio_plugins.storage_devicemapper.driver import parse_settings
from crio_plugins.storage_devicemapper.metadata import (
    DeviceInfo,
    DeviceSetInfo,
    Transaction,
    is_device_file,
)


def test_names_follow_containers_storage() -> None:
    # st_dev 254:0 (virtio disk), inode 131074: what containers/storage printed for it.
    prefix = dm.device_prefix(os_makedev(254, 0), 131074)
    assert prefix == "container-254:0-131074"
    assert dm.device_name(prefix, "") == "container-254:0-131074-base"
    assert dm.device_name(prefix, "ab" * 32) == f"container-254:0-131074-{'ab' * 32}"
    # containers/storage's own split of a large st_dev, kept for the same names
    assert dm.device_prefix((0x12 << 32) | (0x345 << 8) | 0x67, 1) == "container-837:103-1"


def os_makedev(major: int, minor: int) -> int:
    return (major << 8) | minor


def test_tables() -> None:
    table = dm.pool_table(4194304, "/dev/loop1", "/dev/loop0", 128)
    assert table == "0 4194304 thin-pool /dev/loop1 /dev/loop0 128 32768 1 skip_block_zeroing"
    assert dm.thin_table(524288, "/dev/mapper/p", 7) == "0 524288 thin /dev/mapper/p 7"
    with pytest.raises(ValueError, match="out of range"):
        dm.thin_table(8, "/dev/mapper/p", 1 << 24)


def test_pool_status_is_read() -> None:
    line = "0 4194304 thin-pool 7 1653/16384 400/32768 - rw no_discard_passdown queue_if_no_space"
    status = dm.parse_pool_status(line)
    assert status == dm.PoolStatus(4194304, 7, 1653, 16384, 400, 32768)
    assert status.block_bytes == 65536


@pytest.mark.parametrize(
    "line",
    ["0 100 linear 8:0 0", "0 4194304 thin-pool Fail", "0 8 thin-pool x 1/2 3/4", ""],
)
def test_other_status_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        dm.parse_pool_status(line)


def test_metadata_files_are_what_containers_storage_writes() -> None:
    info = DeviceInfo("ab" * 32, 3, 10737418240, 5)
    assert info.to_json() == (
        b'{"device_id":3,"size":10737418240,"transaction_id":5,"initialized":false,"deleted":false}'
    )
    assert DeviceInfo.from_json("ab" * 32, info.to_json()) == info
    deviceset = DeviceSetInfo(3, "a6ae-uuid", "xfs")
    assert deviceset.to_json() == (
        b'{"next_device_id":3,"BaseDeviceUUID":"a6ae-uuid","BaseDeviceFilesystem":"xfs"}'
    )
    assert DeviceSetInfo.from_json(deviceset.to_json()) == deviceset
    opened = Transaction(6, "cd" * 32, 4)
    assert opened.to_json() == (
        b'{"open_transaction_id":6,"device_hash":"' + b"cd" * 32 + b'","device_id":4}'
    )
    assert Transaction.from_json(opened.to_json()) == opened
    names = ("base", "deviceset-metadata", "transaction-metadata", ".tmp1", "json.migrated")
    assert [n for n in (*names, "ab" * 32) if is_device_file(n)] == ["base", "ab" * 32]


def test_a_damaged_device_file_is_refused() -> None:
    with pytest.raises(ValueError, match="device base"):
        DeviceInfo.from_json("", b'{"size": 1}')
    with pytest.raises(ValueError, match="not JSON"):
        DeviceInfo.from_json("", b"{")


def test_options_and_their_defaults() -> None:
    default = parse_settings([])
    assert (default.base_size, default.loop_data_size, default.loop_metadata_size) == (
        10 << 30, 100 << 30, 2 << 30)  # fmt: skip
    assert default.filesystem == "" and default.deferred_removal and default.deferred_deletion
    settings = parse_settings([
        "dm.basesize=256M", "devicemapper.loopdatasize=2G", "dm.loopmetadatasize=64M",
        "dm.fs=xfs", "dm.mkfsarg=-K", "dm.mountopt=nodev,noatime", "dm.thinpooldev=/dev/mapper/tp",
        "dm.blocksize=512K", "dm.use_deferred_removal=false", "dm.use_deferred_deletion=false",
        "dm.min_free_space=5%", "overlay.mountopt=ignored",
    ])  # fmt: skip
    assert settings.base_size == 256 << 20 and settings.loop_data_size == 2 << 30
    assert settings.filesystem == "xfs" and settings.mkfs_args == ("-K",)
    assert settings.mount_options == ("nodev", "noatime") and settings.thin_pool == "tp"
    assert settings.block_sectors == 1024 and settings.min_free_percent == 5
    assert not settings.deferred_removal and not settings.deferred_deletion


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("dm.fs=btrfs", "dm.fs: got 'btrfs', expected ext4 or xfs"),
        ("dm.basesize=big", "dm.basesize: got 'big'"),
        ("dm.blocksize=4K", "dm.blocksize: must be a multiple of 64K"),
        ("dm.min_free_space=10", "dm.min_free_space: got '10'"),
        ("dm.use_deferred_removal=maybe", "dm.use_deferred_removal: got 'maybe'"),
        ("dm.override_udev_sync_check=true", "unknown devicemapper option"),
        ("dm.imagestore=/x", "additionalimagestores: a devicemapper layer"),
    ],
)
def test_bad_options_are_refused_by_name(option: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_settings([option])
    assert caught.value.key == "crio.storage_option"


def test_deferred_deletion_needs_deferred_removal() -> None:
    assert not parse_settings(["dm.use_deferred_removal=false"]).deferred_deletion
    with pytest.raises(ConfigError, match=r"needs dm\.use_deferred_removal"):
        parse_settings(["dm.use_deferred_removal=false", "dm.use_deferred_deletion=true"])


def test_a_kernel_without_device_mapper_refuses_the_driver(tmp_path) -> None:
    from crio.errors import UnsupportedError
    from crio_plugins.storage_devicemapper.deviceset import devicemapper_missing
    from crio_plugins.storage_devicemapper.driver import DevmapperDriver

    if not devicemapper_missing():
        pytest.skip("this kernel has device-mapper")
    with pytest.raises(UnsupportedError, match=r"storage driver devicemapper: kernel .* has no"):
        DevmapperDriver(tmp_path / "dm", tmp_path / "run", ["dm.fs=ext4"])
    assert not (tmp_path / "dm").exists()  # nothing made before the refusal
