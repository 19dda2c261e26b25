"""Device-mapper thin provisioning as text: tables, pool messages, status lines, names.

Pure: what ``dmsetup`` is given and what it prints, per the kernel's
``Documentation/admin-guide/device-mapper/thin-provisioning.rst``:

* a pool: ``0 DATA_SECTORS thin-pool METADATA_DEV DATA_DEV BLOCK_SECTORS
  LOW_WATER_MARK [FEATURES]``;
* a thin device: ``0 SECTORS thin POOL_DEV DEVICE_ID``;
* pool messages ``create_thin ID``, ``create_snap ID ORIGIN_ID``, ``delete ID``,
  ``set_transaction_id OLD NEW``;
* a pool's status: ``TRANSACTION_ID USED_META/TOTAL_META USED_DATA/TOTAL_DATA ...``.

Names follow containers/storage, so that podman finds the same devices:
``container-MAJOR:MINOR-INODE`` of the driver's home, ``PREFIX-pool`` and
``PREFIX-HASH`` (``PREFIX-base`` for the base device).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "LOW_WATER_MARK",
    "MAX_DEVICE_ID",
    "SECTOR",
    "PoolStatus",
    "device_name",
    "device_prefix",
    "parse_pool_status",
    "pool_table",
    "thin_table",
]

SECTOR = 512
#: Device ids are 24 bits in a thin pool.
MAX_DEVICE_ID = 0xFFFFFF
#: Free data blocks below which the pool raises an event (containers/storage's value).
LOW_WATER_MARK = 32768


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """What ``dmsetup status POOL`` says of a thin pool."""

    sectors: int
    transaction_id: int
    metadata_used: int  # 4 KiB blocks
    metadata_total: int
    data_used: int  # pool blocks
    data_total: int

    @property
    def block_bytes(self) -> int:
        return self.sectors // self.data_total * SECTOR if self.data_total else 0


def _major_minor(st_dev: int) -> tuple[int, int]:
    # containers/storage's own split of st_dev (not glibc's), kept for the same names.
    return (st_dev >> 8) & 0xFFF, (st_dev & 0xFF) | ((st_dev >> 12) & 0xFFF00)


def device_prefix(st_dev: int, st_ino: int) -> str:
    """``container-MAJOR:MINOR-INODE`` of the driver's home directory."""
    major, minor = _major_minor(st_dev)
    return f"container-{major}:{minor}-{st_ino}"


def device_name(prefix: str, layer_hash: str) -> str:
    """The thin device of a layer (``""``: the base device)."""
    return f"{prefix}-{layer_hash or 'base'}"


def pool_table(data_sectors: int, metadata_dev: str, data_dev: str, block_sectors: int) -> str:
    """The table of a thin pool that skips zeroing new blocks (every filesystem writes
    its blocks before reading them), as containers/storage makes it."""
    return (
        f"0 {data_sectors} thin-pool {metadata_dev} {data_dev} {block_sectors} "
        f"{LOW_WATER_MARK} 1 skip_block_zeroing"
    )


def thin_table(sectors: int, pool_dev: str, device_id: int) -> str:
    if not 0 <= device_id <= MAX_DEVICE_ID:
        raise ValueError(f"thin device id {device_id} is out of range")
    return f"0 {sectors} thin {pool_dev} {device_id}"


def parse_pool_status(line: str) -> PoolStatus:
    """Parse one ``dmsetup status`` line of a thin pool.

    :raises ValueError: not a thin-pool status line (or a failed pool: ``Fail``).
    """
    fields = line.split()
    if len(fields) < 6 or fields[2] != "thin-pool":
        raise ValueError(f"not a thin-pool status: {line!r}")
    if fields[3] == "Fail":
        raise ValueError("the thin pool has failed")
    try:
        meta_used, meta_total = (int(x) for x in fields[4].split("/"))
        data_used, data_total = (int(x) for x in fields[5].split("/"))
        return PoolStatus(
            int(fields[1]), int(fields[3]), meta_used, meta_total, data_used, data_total
        )
    except ValueError:
        raise ValueError(f"cannot read thin-pool status {line!r}") from None
