"""OCI image layouts on disk (image-spec ``image-layout.md``): read and write.

::

    DIR/oci-layout        {"imageLayoutVersion": "1.0.0"}
    DIR/index.json        an image index; entries named by the
                          "org.opencontainers.image.ref.name" annotation
    DIR/blobs/ALG/HEX     every manifest, config and layer

Used by the ``oci:`` and ``oci-archive:`` transports (and by tests to build
images). A reference is ``DIR[:REF]``; without REF a source must hold one
image and a destination adds an unnamed entry.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from crio.errors import InvalidRequestError, NotFoundError, StorageError
from crio.image import manifest as mf
from crio.image._io import StagedBlob, file_chunks, write_atomic
from crio.image.digest import expect_digest
from crio.image.reference import Reference, validate_digest
from crio.image.transport import BlobInfo, LayerCompression

__all__ = ["REF_NAME", "LayoutDestination", "LayoutSource", "split_reference"]

REF_NAME = "org.opencontainers.image.ref.name"
_LAYOUT = {"imageLayoutVersion": "1.0.0"}


def split_reference(reference: str) -> tuple[Path, str]:
    """``DIR[:REF]`` to an absolute path and the ref name (which may be empty)."""
    path, _, ref = reference.partition(":")
    if not path:
        raise InvalidRequestError(f"invalid OCI layout reference {reference!r}: no directory")
    if ref and not all(c.isalnum() or c in "._-:@/+" for c in ref):
        raise InvalidRequestError(f"invalid OCI layout reference {reference!r}: bad ref {ref!r}")
    return Path(path).absolute(), ref


def blob_path(root: Path, digest: str) -> Path:
    algorithm, _, hexpart = validate_digest(digest).partition(":")
    return root / "blobs" / algorithm / hexpart


def _read_index(root: Path) -> dict[str, Any]:
    try:
        doc = json.loads((root / "index.json").read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"{root} is not an OCI layout (no index.json)") from None
    except (OSError, ValueError) as exc:
        raise StorageError(f"{root}/index.json: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
        raise StorageError(f"{root}/index.json is not an image index")
    return doc


class LayoutSource:
    """An image in an OCI layout directory."""

    def __init__(
        self, root: Path, ref: str, reference: str, docker_reference: Reference | None = None
    ) -> None:
        self.root = root
        self.ref = ref
        self.reference = reference
        self.docker_reference = docker_reference
        self._entry: mf.Descriptor | None = None

    async def _top(self) -> mf.Descriptor:
        if self._entry is None:
            doc = await asyncio.to_thread(_read_index, self.root)
            entries = [e for e in doc.get("manifests", []) if isinstance(e, dict)]
            if self.ref.startswith("@") and self.ref[1:].isdigit():
                chosen = entries[int(self.ref[1:])] if int(self.ref[1:]) < len(entries) else None
            elif self.ref:
                named = [
                    e for e in entries if (e.get("annotations") or {}).get(REF_NAME) == self.ref
                ]
                chosen = named[0] if named else None
            else:
                if len(entries) > 1:
                    raise InvalidRequestError(
                        f"{self.reference}: the layout holds {len(entries)} images; "
                        "name one as DIR:REF"
                    )
                chosen = entries[0] if entries else None
            if chosen is None:
                raise NotFoundError(f"no image {self.ref or ''} in OCI layout {self.root}")
            self._entry = mf._descriptor(chosen, "index.json entry")
        return self._entry

    async def _read_blob(self, digest: str, limit: int) -> bytes:
        path = blob_path(self.root, digest)

        def read() -> bytes:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                raise StorageError(f"blob {digest} in {self.root} is larger than {limit} bytes")
            return data

        try:
            return await asyncio.to_thread(read)
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is missing from OCI layout {self.root}") from None

    async def manifest(self, instance_digest: str | None = None) -> tuple[bytes, str]:
        entry = await self._top()
        digest = instance_digest or entry.digest
        data = await self._read_blob(digest, 4 << 20)
        got = mf.manifest_digest(data, "", digest.partition(":")[0])
        expect_digest(f"manifest {digest} in {self.root}", digest, got)
        media_type = entry.media_type if instance_digest is None and entry.media_type else ""
        return data, media_type or mf.guess_media_type(data)

    async def blob(self, info: BlobInfo) -> AsyncIterator[bytes]:
        path = blob_path(self.root, info.digest)
        if not await asyncio.to_thread(path.exists):
            raise NotFoundError(f"blob {info.digest} is missing from OCI layout {self.root}")
        async for chunk in file_chunks(path):
            yield chunk

    async def signatures(self, instance_digest: str | None = None) -> Sequence[bytes]:
        return ()

    async def layer_infos(self) -> Sequence[BlobInfo] | None:
        return None

    async def close(self) -> None:
        return None


class LayoutDestination:
    """Writes one image into an OCI layout; index.json changes only at commit."""

    # OCI only, as containers/image's: an index.json entry of a Docker type is
    # invisible to other tools, so Docker manifests are converted.
    supported_manifest_types = (mf.OCI_MANIFEST,)
    layer_compression = LayerCompression.PRESERVE

    def __init__(self, root: Path, ref: str) -> None:
        self.root = root
        self.ref = ref
        self._new_blobs: list[Path] = []
        self._manifest: tuple[str, int, str] | None = None
        self._committed = False
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = root / "oci-layout"
        if not layout.exists():
            write_atomic(layout, json.dumps(_LAYOUT).encode())

    async def has_blob(self, info: BlobInfo) -> BlobInfo | None:
        path = blob_path(self.root, info.digest)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return None
        return info if info.size < 0 or info.size == size else None

    async def put_blob(self, info: BlobInfo, data: AsyncIterator[bytes]) -> BlobInfo:
        staged = StagedBlob(self.root / "blobs")
        await staged.write_all(data)
        digest = staged.hasher.digest()
        target = blob_path(self.root, digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            self._new_blobs.append(target)
        os.replace(staged.path, target)
        media_type = info.media_type
        if digest != info.digest and info.index >= 0:
            media_type = mf.OCI_LAYER  # the engine handed us the layer decompressed
        return BlobInfo(digest, staged.hasher.size, media_type, info.diff_id, info.index)

    async def put_index(self, index: bytes, media_type: str) -> None:
        return None

    async def put_manifest(self, manifest: bytes, media_type: str) -> None:
        digest = mf.manifest_digest(manifest, media_type)
        target = blob_path(self.root, digest)
        if not target.exists():
            self._new_blobs.append(target)
            await asyncio.to_thread(write_atomic, target, manifest)
        self._manifest = (digest, len(manifest), media_type)

    async def put_signatures(self, signatures: Sequence[bytes]) -> None:
        return None  # an OCI layout has no place for simple signatures

    def _update_index(self) -> None:
        assert self._manifest is not None
        digest, size, media_type = self._manifest
        index_file = self.root / "index.json"
        doc = (
            _read_index(self.root) if index_file.exists() else {"schemaVersion": 2, "manifests": []}
        )
        entries = doc.setdefault("manifests", [])
        entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
        if self.ref:
            entries[:] = [
                e for e in entries if (e.get("annotations") or {}).get(REF_NAME) != self.ref
            ]
            entry["annotations"] = {REF_NAME: self.ref}
        else:
            entries[:] = [e for e in entries if e.get("digest") != digest or e.get("annotations")]
        entries.append(entry)
        doc["schemaVersion"] = 2
        doc.setdefault("mediaType", mf.OCI_INDEX)
        write_atomic(index_file, json.dumps(doc).encode())

    async def commit(self) -> str:
        if self._manifest is None:
            raise StorageError(f"commit to {self.root} before a manifest was written")
        await asyncio.to_thread(self._update_index)
        self._committed = True
        return f"{self.root}:{self.ref}" if self.ref else str(self.root)

    async def close(self) -> None:
        if not self._committed:
            for path in self._new_blobs:
                path.unlink(missing_ok=True)


def remove_layout(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
