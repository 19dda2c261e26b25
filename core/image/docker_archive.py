"""The ``docker save`` format (docker-archive): read and write.

A tar holding ``manifest.json``::

    [{"Config": "HEX.json", "RepoTags": ["busybox:latest"],
      "Layers": ["HEX.tar", ...]}]

plus the config and layer files it names (layers plain or compressed; Docker
25 and later keep them under ``blobs/sha256/`` with symlinks at the old
paths). A reference is ``FILE[:NAME:TAG]`` or ``FILE:@INDEX``. Reading builds
a schema 2 manifest from the files, hashing each layer as containers/image
does; writing stages the blobs and writes the tar at commit, atomically.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from crio.errors import InvalidRequestError, NotFoundError, StorageError
from crio.image import compression
from crio.image import manifest as mf
from crio.image._io import CHUNK, StagedBlob, file_chunks
from crio.image.convert import render_manifest
from crio.image.digest import Hasher, digest_of
from crio.image.reference import Reference, normalize, parse
from crio.image.transport import BlobInfo, LayerCompression

__all__ = ["ArchiveDestination", "ArchiveSource", "split_reference"]

_LAYER_TYPES = {
    compression.Compression.GZIP: mf.DOCKER_LAYER_GZIP,
    compression.Compression.NONE: mf.DOCKER_LAYER_TAR,
    compression.Compression.ZSTD: mf.OCI_LAYER_ZSTD,
}


def split_reference(reference: str) -> tuple[Path, Reference | None, int]:
    """``FILE[:NAME[:TAG]]`` or ``FILE:@N`` to (path, reference or None, index or -1)."""
    path, _, rest = reference.partition(":")
    if not path:
        raise InvalidRequestError(f"invalid archive reference {reference!r}: no file")
    if rest.startswith("@"):
        if not rest[1:].isdigit():
            raise InvalidRequestError(f"invalid archive reference {reference!r}: @ needs a number")
        return Path(path).absolute(), None, int(rest[1:])
    if not rest:
        return Path(path).absolute(), None, -1
    ref = normalize(parse(rest))
    if ref.digest:
        raise InvalidRequestError(
            f"invalid archive reference {reference!r}: digests are not allowed"
        )
    return Path(path).absolute(), ref if ref.tag else ref.with_tag("latest"), -1


@dataclass(frozen=True, slots=True)
class _Member:
    offset: int
    size: int


def _index_tar(path: Path) -> dict[str, _Member]:
    members: dict[str, _Member] = {}
    links: dict[str, str] = {}
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            name = posixpath.normpath(info.name.lstrip("/"))
            if info.isfile():
                members[name] = _Member(info.offset_data, info.size)
            elif info.issym():
                links[name] = posixpath.normpath(
                    posixpath.join(posixpath.dirname(name), info.linkname)
                )
            elif info.islnk():
                links[name] = posixpath.normpath(info.linkname.lstrip("/"))
    for name, target in links.items():
        for _ in range(8):
            if target in members:
                members[name] = members[target]
                break
            target = links.get(target, "")
    return members


class ArchiveSource:
    """One image of a docker-archive file."""

    def __init__(
        self, path: Path, ref: Reference | None, index: int, reference: str, tmp_dir: str = ""
    ) -> None:
        self.path = path
        self.ref = ref
        self.index = index
        self.reference = reference
        self.docker_reference = ref
        self._tmp_dir = tmp_dir
        self._plain: Path | None = None
        self._members: dict[str, _Member] = {}
        self._manifest: bytes = b""
        self._blobs: dict[str, _Member] = {}
        self.repo_tags: list[str] = []

    def _read_member(self, name: str, limit: int = 64 << 20) -> bytes:
        member = self._members.get(posixpath.normpath(name))
        if member is None:
            raise StorageError(f"{self.path}: {name} is missing from the archive")
        if member.size > limit:
            raise StorageError(f"{self.path}: {name} is larger than {limit} bytes")
        assert self._plain is not None
        with open(self._plain, "rb") as f:
            f.seek(member.offset)
            return f.read(member.size)

    def _hash_member(self, member: _Member) -> tuple[str, bytes]:
        assert self._plain is not None
        hasher = Hasher()
        head = b""
        with open(self._plain, "rb") as f:
            f.seek(member.offset)
            left = member.size
            while left:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise StorageError(f"{self.path}: the archive is truncated")
                if not head:
                    head = data[: compression.MAGIC_LENGTH]
                hasher.update(data)
                left -= len(data)
        return hasher.digest(), head

    def _open(self) -> None:
        with open(self.path, "rb") as f:
            head = f.read(compression.MAGIC_LENGTH)
        kind = compression.detect(head)
        if kind is compression.Compression.GZIP:
            fd, name = tempfile.mkstemp(prefix="crio-archive-", dir=self._tmp_dir or None)
            with os.fdopen(fd, "wb") as out, gzip.open(self.path, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
            self._plain = Path(name)
        elif kind is compression.Compression.NONE:
            self._plain = self.path
        else:
            raise StorageError(
                f"{self.path}: archives compressed with {kind.value} are not supported"
            )
        try:
            self._members = _index_tar(self._plain)
        except tarfile.TarError as exc:
            raise StorageError(f"{self.path} is not a tar archive: {exc}") from None
        try:
            entries = json.loads(self._read_member("manifest.json"))
        except ValueError as exc:
            raise StorageError(f"{self.path}: manifest.json is not JSON: {exc}") from None
        self._build(self._choose(entries))

    def _choose(self, entries: object) -> dict[str, object]:
        if not isinstance(entries, list) or not entries:
            raise StorageError(f"{self.path}: manifest.json lists no image")
        if self.index >= 0:
            if self.index >= len(entries):
                raise NotFoundError(
                    f"{self.path} has {len(entries)} images, no image @{self.index}"
                )
            return entries[self.index]
        if self.ref is None:
            if len(entries) > 1:
                raise InvalidRequestError(f"{self.path} holds {len(entries)} images; name one")
            return entries[0]
        for entry in entries:
            for tag in entry.get("RepoTags") or []:
                try:
                    if str(normalize(parse(tag))) == str(self.ref):
                        return entry
                except InvalidRequestError:
                    continue
        raise NotFoundError(f"no image {self.ref} in {self.path}")

    def _build(self, entry: dict[str, object]) -> None:
        config_name = str(entry.get("Config", ""))
        config = self._read_member(config_name)
        config_digest = digest_of(config)
        self._blobs[config_digest] = self._members[posixpath.normpath(config_name)]
        layers = []
        for name in entry.get("Layers") or []:  # type: ignore[union-attr]
            member = self._members.get(posixpath.normpath(str(name)))
            if member is None:
                raise StorageError(f"{self.path}: layer {name} is missing from the archive")
            digest, head = self._hash_member(member)
            self._blobs[digest] = member
            kind = compression.detect(head)
            layers.append(
                mf.Descriptor(_LAYER_TYPES.get(kind, mf.DOCKER_LAYER_TAR), digest, member.size)
            )
        self.repo_tags = [str(t) for t in entry.get("RepoTags") or []]  # type: ignore[union-attr]
        manifest = mf.ImageManifest(
            mf.DOCKER_SCHEMA2,
            mf.Descriptor(mf.DOCKER_CONFIG, config_digest, len(config)),
            tuple(layers),
        )
        self._manifest = render_manifest(manifest)

    async def manifest(self, instance_digest: str | None = None) -> tuple[bytes, str]:
        if not self._manifest:
            await asyncio.to_thread(self._open)
        return self._manifest, mf.DOCKER_SCHEMA2

    async def blob(self, info: BlobInfo) -> AsyncIterator[bytes]:
        member = self._blobs.get(info.digest)
        if member is None or self._plain is None:
            raise NotFoundError(f"blob {info.digest} is not in {self.path}")
        async for chunk in file_chunks(self._plain, member.offset, member.size):
            yield chunk

    async def signatures(self, instance_digest: str | None = None) -> Sequence[bytes]:
        return ()

    async def layer_infos(self) -> Sequence[BlobInfo] | None:
        return None

    async def close(self) -> None:
        if self._plain is not None and self._plain != self.path:
            self._plain.unlink(missing_ok=True)


class ArchiveDestination:
    """Writes one image as a docker-archive file, replacing the file at commit."""

    supported_manifest_types = (mf.DOCKER_SCHEMA2,)
    layer_compression = LayerCompression.DECOMPRESS

    def __init__(self, path: Path, ref: Reference | None, tmp_dir: str = "") -> None:
        self.path = path
        self.ref = ref
        self._dir = Path(tempfile.mkdtemp(prefix="crio-save-", dir=tmp_dir or path.parent))
        self._blobs: dict[str, Path] = {}
        self._manifest: mf.ImageManifest | None = None

    async def has_blob(self, info: BlobInfo) -> BlobInfo | None:
        return None

    async def put_blob(self, info: BlobInfo, data: AsyncIterator[bytes]) -> BlobInfo:
        staged = StagedBlob(self._dir)
        await staged.write_all(data)
        digest = staged.hasher.digest()
        self._blobs[digest] = staged.path
        media_type = mf.DOCKER_LAYER_TAR if info.index >= 0 else info.media_type
        return BlobInfo(digest, staged.hasher.size, media_type, info.diff_id, info.index)

    async def put_index(self, index: bytes, media_type: str) -> None:
        return None

    async def put_manifest(self, manifest: bytes, media_type: str) -> None:
        parsed = mf.parse(manifest, media_type)
        if not isinstance(parsed, mf.ImageManifest):
            raise StorageError("docker-archive takes one image manifest")
        self._manifest = parsed

    async def put_signatures(self, signatures: Sequence[bytes]) -> None:
        return None

    def _write(self) -> None:
        assert self._manifest is not None
        manifest = self._manifest
        config_hex = manifest.config.digest.partition(":")[2]
        layer_names = [f"{layer.digest.partition(':')[2]}.tar" for layer in manifest.layers]
        repo_tags = [self.ref.familiar()] if self.ref else []
        doc = [{"Config": f"{config_hex}.json", "RepoTags": repo_tags, "Layers": layer_names}]
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}-")
        try:
            with (
                os.fdopen(fd, "wb") as out,
                tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tar,
            ):
                tar.add(self._blobs[manifest.config.digest], arcname=f"{config_hex}.json")
                for layer, name in zip(manifest.layers, layer_names, strict=True):
                    tar.add(self._blobs[layer.digest], arcname=name)
                for name, data in self._metadata(doc, layer_names).items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mode = 0o644
                    tar.addfile(info, _BytesReader(data))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _metadata(self, doc: list[dict[str, object]], layer_names: list[str]) -> dict[str, bytes]:
        files = {"manifest.json": json.dumps(doc).encode()}
        if self.ref is not None and layer_names:
            top = layer_names[-1].removesuffix(".tar")
            familiar = self.ref.familiar().rsplit(":", 1)[0]
            files["repositories"] = json.dumps({familiar: {self.ref.tag: top}}).encode()
        return files

    async def commit(self) -> str:
        if self._manifest is None:
            raise StorageError(f"commit to {self.path} before a manifest was written")
        await asyncio.to_thread(self._write)
        return str(self.path)

    async def close(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self._dir, True)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        out = bytes(self._data[self._pos : end])
        self._pos += len(out)
        return out
