"""The ``ImageTransport`` contract: where images come from and go to.

A transport (``docker://``, ``oci:``, ``docker-archive:`` ...) turns a
reference into an image source to read from or an image destination to
write to. Core's copy loop moves a manifest, its config and layer blobs
between any source and destination, verifying every digest, so a transport
only moves bytes; it never decides what is trusted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "BlobInfo",
    "ImageDestination",
    "ImageSource",
    "ImageTransport",
    "TransportContext",
]


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob as a manifest names it."""

    digest: str
    size: int = -1
    media_type: str = ""


@dataclass(frozen=True, slots=True)
class TransportContext:
    """Per-operation settings: credentials, TLS, where configs live.

    ``username``/``password`` or ``identity_token``/``registry_token`` come from
    the CRI ``AuthConfig`` or kpod's ``--creds``; ``auth_files`` are tried in
    order when those are empty.
    """

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""
    auth_files: Sequence[str] = ()
    insecure_registries: Sequence[str] = ()
    tls_verify: bool = True
    registries_conf: str = ""
    platform_os: str = "linux"
    platform_architecture: str = "amd64"
    platform_variant: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


class ImageSource(Protocol):
    """An image being read: manifest, blobs and signatures."""

    async def manifest(self, instance_digest: str | None = None) -> tuple[bytes, str]:
        """The manifest bytes and media type; ``instance_digest`` picks one of an index."""

    def blob(self, info: BlobInfo) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive (core hashes them)."""

    async def signatures(self, instance_digest: str | None = None) -> Sequence[bytes]:
        """Simple-signing signatures of the manifest, if the transport has any."""

    async def close(self) -> None: ...


class ImageDestination(Protocol):
    """An image being written; nothing is visible until :meth:`commit`."""

    async def has_blob(self, info: BlobInfo) -> bool:
        """Whether the destination already holds the blob (to skip the copy)."""

    async def put_blob(self, info: BlobInfo, data: AsyncIterator[bytes]) -> BlobInfo:
        """Store one blob; return what was stored (the digest verified)."""

    async def put_manifest(self, manifest: bytes, media_type: str) -> None: ...

    async def put_signatures(self, signatures: Sequence[bytes]) -> None: ...

    async def commit(self) -> str:
        """Make the image visible; return its id (the config digest) or reference."""

    async def close(self) -> None:
        """Release resources; without :meth:`commit` nothing of the image stays."""


@runtime_checkable
class ImageTransport(Protocol):
    """One transport, named by its reference prefix (``docker``, ``oci-archive`` ...)."""

    name: str

    def validate_reference(self, reference: str) -> str:
        """Check the part after ``NAME:``; return it normalised or raise InvalidRequestError."""

    async def open_source(self, reference: str, context: TransportContext) -> ImageSource: ...

    async def open_destination(
        self, reference: str, context: TransportContext
    ) -> ImageDestination: ...
