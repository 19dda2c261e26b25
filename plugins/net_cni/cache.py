"""The on-disk record of every attachment, so DEL works after a restart.

One JSON file per attachment, ``DIR/<container id>-<ifname>.json``, holding
what ADD ran (the network list as it was, the capability arguments, CNI_ARGS,
the netns path, which plugins were left out) and, once ADD succeeded, its
result. The record is written *before* ADD runs, so that a daemon killed in
the middle of ADD still knows to run DEL; it is removed after DEL succeeds.

Files are replaced atomically (write a temporary file, rename). They are not
fsync'd: the runroot lives for one boot, and the kernel keeps written data
when the daemon dies.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crio_plugins.net_cni.protocol import check_container_id

__all__ = ["CacheRecord", "ResultCache"]

FORMAT = "crio-cni-cache/1"


@dataclass(frozen=True, slots=True)
class CacheRecord:
    """One attachment: enough to run DEL exactly as ADD ran, with ADD's result."""

    container_id: str
    ifname: str
    netns: str
    cni_args: str
    network: Mapping[str, Any]
    capability_args: Mapping[str, Any] = field(default_factory=dict)
    skipped: tuple[int, ...] = ()
    result: Mapping[str, Any] | None = None

    def with_result(self, result: Mapping[str, Any]) -> CacheRecord:
        return replace(self, result=result)

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "containerId": self.container_id,
            "ifName": self.ifname,
            "netns": self.netns,
            "cniArgs": self.cni_args,
            "network": self.network,
            "capabilityArgs": self.capability_args,
            "skipped": list(self.skipped),
            "result": self.result,
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> CacheRecord:
        """Parse a record; ValueError names ``source`` when it is not one."""
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            result = doc.get("result")
            return cls(
                container_id=str(doc["containerId"]),
                ifname=str(doc["ifName"]),
                netns=str(doc["netns"]),
                cni_args=str(doc["cniArgs"]),
                network=dict(doc["network"]),
                capability_args=dict(doc.get("capabilityArgs") or {}),
                skipped=tuple(int(i) for i in doc.get("skipped") or ()),
                result=dict(result) if result is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{source}: not a CNI cache record: {exc}") from None


class ResultCache:
    """The records of one network plugin instance, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, container_id: str, ifname: str) -> Path:
        check_container_id(container_id)
        return self.directory / f"{container_id}-{ifname}.json"

    def _write(self, record: CacheRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(record.container_id, record.ifname)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(record.to_json())
        os.replace(tmp, path)

    async def write(self, record: CacheRecord) -> None:
        await asyncio.to_thread(self._write, record)

    def read(self, container_id: str, ifname: str) -> CacheRecord | None:
        """The record, or None when there is none."""
        path = self.path(container_id, ifname)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return CacheRecord.from_json(data, str(path))

    async def remove(self, container_id: str, ifname: str) -> None:
        await asyncio.to_thread(self.path(container_id, ifname).unlink, missing_ok=True)

    def unfinished_writes(self) -> list[Path]:
        """Temporary files of writes a killed daemon never renamed into place."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        return [self.directory / n for n in names if n.startswith(".") and n.endswith(".tmp")]

    def records(self) -> Iterator[CacheRecord]:
        """Every readable record (unreadable files are skipped: they name no attachment)."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            path = self.directory / name
            try:
                yield CacheRecord.from_json(path.read_bytes(), str(path))
            except (OSError, ValueError):
                continue
