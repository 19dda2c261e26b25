"""The archive transports' sources and destinations (see the package docstring)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from crio.errors import InvalidRequestError, StorageError
from crio.image.docker_archive import ArchiveDestination, ArchiveSource, split_reference
from crio.image.oci_layout import LayoutDestination, LayoutSource
from crio.image.transport import BlobInfo, TransportContext

__all__ = ["DockerArchiveTransport", "OCIArchiveTransport"]


class DockerArchiveTransport:
    name = "docker-archive"

    def validate_reference(self, reference: str) -> str:
        path, ref, index = split_reference(reference)
        suffix = f":{ref}" if ref else (f":@{index}" if index >= 0 else "")
        return f"{path}{suffix}"

    def policy_identity(self, reference: str) -> str:
        return self.validate_reference(reference)

    async def open_source(self, reference: str, context: TransportContext) -> ArchiveSource:
        path, ref, index = split_reference(reference)
        return ArchiveSource(path, ref, index, f"docker-archive:{reference}", context.tmp_dir)

    async def open_destination(
        self, reference: str, context: TransportContext
    ) -> ArchiveDestination:
        path, ref, index = split_reference(reference)
        if index >= 0:
            raise InvalidRequestError(f"docker-archive:{reference}: cannot write to an @index")
        return ArchiveDestination(path, ref, context.tmp_dir)


def _split(reference: str) -> tuple[Path, str]:
    path, _, ref = reference.partition(":")
    if not path:
        raise InvalidRequestError(f"invalid oci-archive reference {reference!r}: no file")
    return Path(path).absolute(), ref


def _extract(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise StorageError(f"{archive} is not a readable OCI archive: {exc}") from None


class _ArchiveLayoutSource(LayoutSource):
    async def close(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root, True)


class _ArchiveLayoutDestination:
    def __init__(self, archive: Path, ref: str, tmp_dir: str) -> None:
        self.archive = archive
        self._dir = Path(tempfile.mkdtemp(prefix="crio-oci-archive-", dir=tmp_dir or None))
        self._layout = LayoutDestination(self._dir, ref)
        self.supported_manifest_types = self._layout.supported_manifest_types
        self.layer_compression = self._layout.layer_compression

    async def has_blob(self, info: BlobInfo) -> BlobInfo | None:
        return await self._layout.has_blob(info)

    async def put_blob(self, info: BlobInfo, data: AsyncIterator[bytes]) -> BlobInfo:
        return await self._layout.put_blob(info, data)

    async def put_index(self, index: bytes, media_type: str) -> None:
        return None

    async def put_manifest(self, manifest: bytes, media_type: str) -> None:
        await self._layout.put_manifest(manifest, media_type)

    async def put_signatures(self, signatures: Sequence[bytes]) -> None:
        return None

    def _write(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.archive.parent, prefix=f".{self.archive.name}-")
        try:
            with (
                os.fdopen(fd, "wb") as out,
                tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tar,
            ):
                for name in ("oci-layout", "index.json", "blobs"):
                    tar.add(self._dir / name, arcname=name)
            os.replace(tmp, self.archive)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def commit(self) -> str:
        await self._layout.commit()
        await asyncio.to_thread(self._write)
        return str(self.archive)

    async def close(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self._dir, True)


class OCIArchiveTransport:
    name = "oci-archive"

    def validate_reference(self, reference: str) -> str:
        path, ref = _split(reference)
        return f"{path}:{ref}" if ref else str(path)

    def policy_identity(self, reference: str) -> str:
        return self.validate_reference(reference)

    async def open_source(self, reference: str, context: TransportContext) -> LayoutSource:
        path, ref = _split(reference)
        into = Path(tempfile.mkdtemp(prefix="crio-oci-archive-", dir=context.tmp_dir or None))
        try:
            await asyncio.to_thread(_extract, path, into)
        except BaseException:
            shutil.rmtree(into, ignore_errors=True)
            raise
        return _ArchiveLayoutSource(into, ref, f"oci-archive:{reference}")

    async def open_destination(
        self, reference: str, context: TransportContext
    ) -> _ArchiveLayoutDestination:
        path, ref = _split(reference)
        return _ArchiveLayoutDestination(path, ref, context.tmp_dir)
