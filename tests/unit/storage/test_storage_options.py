"""storage_option entries as drivers read them, and sizes as containers/storage writes them."""

from __future__ import annotations

import pytest

from crio.errors import ConfigError
from crio.storage.options import driver_options, parse_size


def test_a_driver_takes_its_prefixed_and_unprefixed_options_only() -> None:
    options = ["btrfs.min_space=1G", "overlay.mountopt=nodev", "Size = 10G", "dm.fs=xfs"]
    assert driver_options(options, ("btrfs",)) == [("min_space", "1G"), ("size", "10G")]
    assert driver_options(options, ("dm", "devicemapper")) == [("size", "10G"), ("fs", "xfs")]


def test_an_option_without_a_value_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'btrfs\.size' is not KEY=VALUE") as caught:
        driver_options(["btrfs.size"], ("btrfs",))
    assert caught.value.key == "crio.storage_option"


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("10k", 10240), ("512M", 512 << 20), ("10G", 10 << 30), ("1.5GiB", 3 << 29),
     ("2gb", 2 << 30), ("1 T", 1 << 40), ("3b", 3)],
)  # fmt: skip
def test_sizes_are_binary(text: str, size: int) -> None:
    assert parse_size(text, "dm.basesize") == size


@pytest.mark.parametrize("text", ["", "ten", "-1G", "10X", "1.2.3G"])
def test_a_bad_size_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match=r"dm\.basesize: got"):
        parse_size(text, "dm.basesize")


def test_shared_stores_come_from_the_config_and_the_drivers_imagestore_options() -> None:
    from pathlib import Path

    from crio.storage.imagestores import image_store_paths

    options = ["overlay.imagestore=/a,/b", "vfs.imagestore=/v", "overlay.mountopt=nodev"]
    assert image_store_paths(options, "overlay", ["/c", "/a"]) == [
        Path("/c"), Path("/a"), Path("/b")]  # fmt: skip
    assert image_store_paths(options, "vfs", []) == [Path("/v")]
    assert image_store_paths([], "btrfs", []) == []
