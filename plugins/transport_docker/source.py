"""Reading an image from a registry: mirrors first, manifests negotiated, blobs resumed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import httpx

from crio.errors import CrioError, NotFoundError, UnavailableError
from crio.image import auth, lookaside
from crio.image import manifest as mf
from crio.image.digest import DigestMismatchError
from crio.image.reference import Reference
from crio.image.registries import PullSource
from crio.image.transport import BlobInfo, TransportContext

from .client import RegistryClient

__all__ = ["DockerSource", "client_for"]

log = logging.getLogger("crio.image.registry")


def client_for(ref: Reference, insecure: bool, context: TransportContext) -> RegistryClient:
    creds = context.credentials
    if not creds:
        creds = auth.lookup(ref.name, context.auth_files)
    return RegistryClient(
        ref.domain,
        insecure=insecure or not context.tls_verify,
        credentials=creds,
        certs_dir=context.certs_dir,
        retries=context.retries,
        user_agent=context.user_agent,
    )


def _api_path(ref: Reference) -> str:
    """The repository path on the wire (Docker Hub serves from registry-1.docker.io)."""
    return ref.path


def _host(ref: Reference) -> Reference:
    if ref.domain == "docker.io":
        return Reference("registry-1.docker.io", ref.path, ref.tag, ref.digest)
    return ref


class DockerSource:
    """One logical reference and the places (mirrors, location) it may be read from."""

    def __init__(
        self, ref: Reference, sources: Sequence[PullSource], context: TransportContext
    ) -> None:
        self.reference = f"docker://{ref}"
        self.docker_reference = ref
        self._sources = list(sources)
        self._context = context
        self._clients: dict[tuple[str, bool], RegistryClient] = {}
        self._chosen: PullSource | None = None
        self._top_digest = ""

    def _client(self, source: PullSource) -> RegistryClient:
        key = (source.reference.domain, source.insecure)
        if key not in self._clients:
            self._clients[key] = client_for(_host(source.reference), source.insecure, self._context)
        return self._clients[key]

    async def _get_manifest(self, source: PullSource, tag_or_digest: str) -> tuple[bytes, str]:
        client = self._client(source)
        ref = source.reference
        path = f"/v2/{_api_path(ref)}/manifests/{tag_or_digest}"
        headers = {"Accept": ", ".join(mf.MANIFEST_ACCEPT)}
        async with client.request(
            "GET", path, scope=f"repository:{ref.path}:pull", headers=headers
        ) as r:
            sep = "@" if ":" in tag_or_digest else ":"
            await client.check(r, f"manifest {ref.name}{sep}{tag_or_digest}")
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > (4 << 20):
                    raise CrioError(f"manifest of {ref} is larger than 4 MiB")
            media_type = r.headers.get("content-type", "").split(";")[0].strip()
            header_digest = r.headers.get("docker-content-digest", "")
        data = bytes(body)
        if media_type in ("", "application/json", "text/plain", "application/octet-stream"):
            media_type = mf.guess_media_type(data)
        if header_digest:
            algorithm = header_digest.partition(":")[0]
            got = mf.manifest_digest(data, media_type, algorithm)
            if got != header_digest:
                raise DigestMismatchError(
                    f"manifest of {ref}: Docker-Content-Digest says {header_digest}, "
                    f"the bytes have {got}"
                )
        return data, media_type

    async def manifest(self, instance_digest: str | None = None) -> tuple[bytes, str]:
        if instance_digest is not None:
            assert self._chosen is not None, "the top-level manifest comes first"
            return await self._get_manifest(self._chosen, instance_digest)
        errors: list[str] = []
        last: CrioError | None = None
        for source in self._sources:
            ref = source.reference
            try:
                data, media_type = await self._get_manifest(
                    source, ref.digest or ref.tag or "latest"
                )
            except (NotFoundError, UnavailableError) as exc:
                if not source.mirror:
                    raise
                log.info("mirror %s failed for %s: %s", ref.domain, self.docker_reference, exc)
                errors.append(str(exc))
                last = exc
                continue
            self._chosen = source
            self._top_digest = mf.manifest_digest(data, media_type)
            if source.mirror:
                log.info("pulling %s from mirror %s", self.docker_reference, ref.name)
            return data, media_type
        assert last is not None
        raise last

    async def blob(self, info: BlobInfo) -> AsyncIterator[bytes]:
        assert self._chosen is not None, "the manifest comes first"
        ref = self._chosen.reference
        client = self._client(self._chosen)
        path = f"/v2/{_api_path(ref)}/blobs/{info.digest}"
        offset = 0
        for attempt in range(1, client.retries + 1):
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                async with client.request(
                    "GET", path, scope=f"repository:{ref.path}:pull", headers=headers
                ) as r:
                    await client.check(r, f"blob {info.digest} of {ref.name}", ok=(200, 206))
                    skip = offset if r.status_code == 200 else 0
                    async for chunk in r.aiter_bytes():
                        if skip:
                            cut = min(skip, len(chunk))
                            chunk, skip = chunk[cut:], skip - cut
                            if not chunk:
                                continue
                        offset += len(chunk)
                        yield chunk
                return
            except (UnavailableError, httpx.TransportError) as exc:
                # The connection broke mid-blob: ask for the rest (Range), so
                # the bytes already hashed downstream are not sent twice.
                if attempt == client.retries:
                    if isinstance(exc, UnavailableError):
                        raise
                    raise UnavailableError(f"blob {info.digest} of {ref.name}: {exc}") from exc
                log.info("blob %s broke off at %d bytes (%s); resuming", info.digest, offset, exc)

    async def signatures(self, instance_digest: str | None = None) -> Sequence[bytes]:
        digest = instance_digest or self._top_digest
        if not digest:
            await self.manifest()
            digest = self._top_digest
        store = self._context.lookaside or lookaside.load()
        base = store.read_base(self.docker_reference)
        return await lookaside.read_signatures(base, self.docker_reference, digest)

    async def layer_infos(self) -> Sequence[BlobInfo] | None:
        return None

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
