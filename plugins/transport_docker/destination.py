"""Pushing an image to a registry: blob uploads (POST, PATCH, PUT), then the manifest."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Sequence

from crio.errors import CrioError
from crio.image import lookaside
from crio.image import manifest as mf
from crio.image.digest import Hasher
from crio.image.reference import Reference
from crio.image.transport import BlobInfo, LayerCompression, TransportContext

from .client import RegistryClient, RegistryError
from .source import _host, client_for

__all__ = ["DockerDestination"]


class DockerDestination:
    supported_manifest_types = (mf.OCI_MANIFEST, mf.DOCKER_SCHEMA2)
    layer_compression = LayerCompression.COMPRESS

    def __init__(self, ref: Reference, insecure: bool, context: TransportContext) -> None:
        self.ref = ref
        self._context = context
        self._client: RegistryClient = client_for(_host(ref), insecure, context)
        self._scope = f"repository:{ref.path}:pull,push"
        self._manifest: tuple[bytes, str] | None = None
        self._signatures: list[bytes] = []

    async def has_blob(self, info: BlobInfo) -> BlobInfo | None:
        path = f"/v2/{self.ref.path}/blobs/{info.digest}"
        async with self._client.request("HEAD", path, scope=self._scope) as r:
            if r.status_code == 404:
                return None
            await self._client.check(r, f"blob {info.digest} in {self.ref.name}")
            size = int(r.headers.get("content-length", info.size))
        return BlobInfo(info.digest, size, info.media_type, info.diff_id, info.index)

    def _location(self, response_location: str, base: str) -> str:
        return urllib.parse.urljoin(base, response_location)

    async def put_blob(self, info: BlobInfo, data: AsyncIterator[bytes]) -> BlobInfo:
        client = self._client
        start = f"/v2/{self.ref.path}/blobs/uploads/"
        async with client.request("POST", start, scope=self._scope, content=b"") as r:
            await client.check(r, f"starting an upload to {self.ref.name}", ok=(202,))
            location = self._location(r.headers.get("location", ""), str(r.url))
        hasher = Hasher()
        compressed = False

        async def counted() -> AsyncIterator[bytes]:
            nonlocal compressed
            async for chunk in data:
                if not hasher.size and chunk[:2] == b"\x1f\x8b":
                    compressed = True
                hasher.update(chunk)
                yield chunk

        headers = {"Content-Type": "application/octet-stream"}
        async with client.request(
            "PATCH", location, scope=self._scope, headers=headers, content=counted()
        ) as r:
            await client.check(r, f"uploading blob {info.digest} to {self.ref.name}", ok=(202, 204))
            location = self._location(r.headers.get("location", location), location)
        digest = hasher.digest()
        sep = "&" if "?" in location else "?"
        final = f"{location}{sep}digest={urllib.parse.quote(digest)}"
        async with client.request("PUT", final, scope=self._scope, content=b"") as r:
            await client.check(r, f"finishing blob {digest} in {self.ref.name}", ok=(201, 204))
        media_type = info.media_type
        if digest != info.digest and info.index >= 0 and compressed:
            media_type = mf.OCI_LAYER_GZIP  # the engine gzipped an uncompressed layer
        return BlobInfo(digest, hasher.size, media_type, info.diff_id, info.index)

    async def put_index(self, index: bytes, media_type: str) -> None:
        return None

    async def put_manifest(self, manifest: bytes, media_type: str) -> None:
        self._manifest = (manifest, media_type)

    async def put_signatures(self, signatures: Sequence[bytes]) -> None:
        self._signatures.extend(signatures)

    async def commit(self) -> str:
        if self._manifest is None:
            raise CrioError(f"push to {self.ref}: no manifest was written")
        manifest, media_type = self._manifest
        target = self.ref.tag or self.ref.digest or "latest"
        path = f"/v2/{self.ref.path}/manifests/{target}"
        headers = {"Content-Type": media_type}
        async with self._client.request(
            "PUT", path, scope=self._scope, headers=headers, content=manifest
        ) as r:
            await self._client.check(r, f"pushing the manifest of {self.ref}", ok=(200, 201, 202))
            returned = r.headers.get("docker-content-digest", "")
        digest = mf.manifest_digest(manifest, media_type)
        if returned and returned != digest:
            raise RegistryError(
                f"registry stored the manifest of {self.ref} as {returned}, not {digest}"
            )
        if self._signatures:
            store = self._context.lookaside or lookaside.load()
            await lookaside.write_signatures(
                store.write_base(self.ref), self.ref, digest, self._signatures
            )
        return f"{self.ref.name}@{digest}"

    async def close(self) -> None:
        await self._client.aclose()
