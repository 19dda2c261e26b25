"""The devicemapper driver's metadata files, byte for byte as containers/storage writes them.

``ROOT/devicemapper/metadata/`` holds one JSON file per thin device, named by
the layer id (``base`` for the base device)::

    {"device_id":3,"size":10737418240,"transaction_id":5,"initialized":false,"deleted":false}

and two files of the whole set::

    deviceset-metadata    {"next_device_id":3,"BaseDeviceUUID":"...","BaseDeviceFilesystem":"xfs"}
    transaction-metadata  {"open_transaction_id":6,"device_hash":"ID","device_id":4}

A change to the pool (a device made or deleted) opens a transaction first:
the transaction file names the pool transaction id it will reach, and the
pool's own transaction id is set to it once the device's file is written.
A process killed in between leaves the two ids apart, and the next opener
rolls the change back. Pure: bytes in, records out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = [
    "DEVICESET_FILE",
    "TRANSACTION_FILE",
    "DeviceInfo",
    "DeviceSetInfo",
    "Transaction",
    "device_file_name",
    "is_device_file",
]

DEVICESET_FILE = "deviceset-metadata"
TRANSACTION_FILE = "transaction-metadata"
BASE = "base"


def _dumps(value: dict[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _loads(data: bytes, what: str) -> dict[str, object]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def device_file_name(layer_hash: str) -> str:
    return layer_hash or BASE


def is_device_file(name: str) -> bool:
    """Whether a file in the metadata directory describes a device."""
    if name in (DEVICESET_FILE, TRANSACTION_FILE):
        return False
    return not (name.startswith(".") or name.endswith(".migrated"))


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One thin device: a layer's (``hash`` = layer id) or the base (``hash`` = "")."""

    hash: str
    device_id: int
    size: int
    transaction_id: int
    initialized: bool = False
    deleted: bool = False

    def to_json(self) -> bytes:
        return _dumps(
            {
                "device_id": self.device_id,
                "size": self.size,
                "transaction_id": self.transaction_id,
                "initialized": self.initialized,
                "deleted": self.deleted,
            }
        )

    @classmethod
    def from_json(cls, layer_hash: str, data: bytes) -> DeviceInfo:
        """:raises ValueError: not a device record."""
        raw = _loads(data, f"device {device_file_name(layer_hash)}")
        try:
            return cls(
                hash=layer_hash,
                device_id=int(raw["device_id"]),  # type: ignore[call-overload]
                size=int(raw["size"]),  # type: ignore[call-overload]
                transaction_id=int(raw.get("transaction_id", 0)),  # type: ignore[call-overload]
                initialized=bool(raw.get("initialized", False)),
                deleted=bool(raw.get("deleted", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"device {device_file_name(layer_hash)}: bad field {exc}") from None


@dataclass(frozen=True, slots=True)
class DeviceSetInfo:
    next_device_id: int = 0
    base_uuid: str = ""
    base_filesystem: str = ""

    def to_json(self) -> bytes:
        return _dumps(
            {
                "next_device_id": self.next_device_id,
                "BaseDeviceUUID": self.base_uuid,
                "BaseDeviceFilesystem": self.base_filesystem,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> DeviceSetInfo:
        raw = _loads(data, DEVICESET_FILE)
        return cls(
            int(raw.get("next_device_id", 0)),  # type: ignore[call-overload]
            str(raw.get("BaseDeviceUUID", "")),
            str(raw.get("BaseDeviceFilesystem", "")),
        )


@dataclass(frozen=True, slots=True)
class Transaction:
    open_transaction_id: int
    device_hash: str
    device_id: int

    def to_json(self) -> bytes:
        return _dumps(
            {
                "open_transaction_id": self.open_transaction_id,
                "device_hash": self.device_hash,
                "device_id": self.device_id,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Transaction:
        raw = _loads(data, TRANSACTION_FILE)
        return cls(
            int(raw.get("open_transaction_id", 0)),  # type: ignore[call-overload]
            str(raw.get("device_hash", "")),
            int(raw.get("device_id", 0)),  # type: ignore[call-overload]
        )
