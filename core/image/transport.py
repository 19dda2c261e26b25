"""The ``ImageTransport`` contract: where images come from and go to.

A transport (``docker://``, ``oci:``, ``docker-archive:`` ...) turns a
reference into an image source to read from or an image destination to
write to. Core's copy engine (:mod:`crio.image.copy`) moves a manifest, its
config and layer blobs between any source and destination, verifying every
digest, so a transport only moves bytes; it never decides what is trusted.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from crio.image.auth import Credentials
    from crio.image.lookaside import Lookaside
    from crio.image.reference import Reference
    from crio.image.registries import Registries

__all__ = [
    "BlobInfo",
    "ImageDestination",
    "ImageSource",
    "ImageTransport",
    "LayerCompression",
    "TransportContext",
]


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob as a manifest names it.

    ``size`` is -1 when unknown. For layers, ``index`` is the position (base
    first) and ``diff_id`` the digest of the uncompressed tar when known
    (from the config's ``rootfs.diff_ids``); the config has ``index == -1``.
    """

    digest: str
    size: int = -1
    media_type: str = ""
    diff_id: str = ""
    index: int = -1


class LayerCompression(enum.Enum):
    """How a destination wants layer bytes handed to :meth:`ImageDestination.put_blob`."""

    #: as the source has them (registries' blobs, an OCI layout)
    PRESERVE = "preserve"
    #: as plain tar (a layer store applying them, docker-archive)
    DECOMPRESS = "decompress"
    #: compressed (gzip) when the source has them uncompressed (a registry)
    COMPRESS = "compress"


@dataclass(frozen=True, slots=True)
class TransportContext:
    """Per-operation settings: credentials, TLS, registry rules, the local store.

    ``credentials`` come from the CRI ``AuthConfig`` or kpod's ``--creds``;
    ``auth_files`` are tried in order when they are absent.
    """

    credentials: Credentials | None = None
    auth_files: Sequence[str] = ()
    registries: Registries | None = None
    lookaside: Lookaside | None = None
    #: False: no TLS verification and plain HTTP allowed for every registry.
    tls_verify: bool = True
    #: Per-host certificates: DIR/HOST[:PORT]/{*.crt,*.cert,*.key}.
    certs_dir: str = "/etc/containers/certs.d"
    platform_os: str = "linux"
    platform_architecture: str = "amd64"
    platform_variant: str = ""
    #: Blobs of one copy moved at once.
    max_parallel: int = 6
    #: Attempts for a request that fails on the connection or with a 5xx.
    retries: int = 4
    #: Where a transport may stage temporary files ("" : the system default).
    tmp_dir: str = ""
    #: The local store (``crio.storage.Store``) for ``containers-storage:``.
    store: Any = None
    user_agent: str = "crio"


@runtime_checkable
class ImageSource(Protocol):
    """An image being read: manifest, blobs and signatures."""

    #: the reference as the user wrote it, for messages
    reference: str
    #: the docker reference signatures must name, when the image has one
    docker_reference: Reference | None

    async def manifest(self, instance_digest: str | None = None) -> tuple[bytes, str]:
        """The manifest bytes and media type; ``instance_digest`` picks one of an index."""

    def blob(self, info: BlobInfo) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive (core hashes them; a transport need not)."""

    async def signatures(self, instance_digest: str | None = None) -> Sequence[bytes]:
        """Simple-signing signatures of the manifest, if the transport has any."""

    async def layer_infos(self) -> Sequence[BlobInfo] | None:
        """The layers as :meth:`blob` will serve them when that differs from the manifest
        (a store serves uncompressed tars); None when the manifest is right."""

    async def close(self) -> None: ...


@runtime_checkable
class ImageDestination(Protocol):
    """An image being written; nothing is visible until :meth:`commit`."""

    #: Manifest types it takes, preferred first; others are converted.
    supported_manifest_types: Sequence[str]
    layer_compression: LayerCompression
    # Optional: ``verifies_diff_ids = True`` says the destination checks each
    # layer's uncompressed digest against BlobInfo.diff_id itself (raising
    # DigestMismatchError naming the blob), so the engine need not inflate it.
    # ``verifies_blob_digests = True`` (with the former) says it also checks a
    # sha256 blob digest and the size, so the engine passes the bytes through.

    async def has_blob(self, info: BlobInfo) -> BlobInfo | None:
        """The blob as already stored (to skip the copy), or None."""

    async def put_blob(self, info: BlobInfo, data: AsyncIterator[bytes]) -> BlobInfo:
        """Store one blob from ``data``; return it as the destination's manifest must name it.

        ``data`` raises at its end when the bytes do not match ``info``: the
        destination must then keep nothing of the blob.
        """

    async def put_index(self, index: bytes, media_type: str) -> None:
        """The index the manifest was chosen from (a store records its digest too)."""

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

    def policy_identity(self, reference: str) -> str:
        """The policy.json scope identity of a (validated) reference."""

    async def open_source(self, reference: str, context: TransportContext) -> ImageSource: ...

    async def open_destination(
        self, reference: str, context: TransportContext
    ) -> ImageDestination: ...

    # Optional, for transports with accounts (``kpod login``):
    #     async def login(self, registry: str, context: TransportContext) -> None
    # checks ``context.credentials`` and raises PermissionDeniedError when refused.
