"""The copy engine: one image from any source to any destination, verified.

Verification is not optional:

* the top-level manifest's digest must equal the digest in the reference
  (transports check ``Docker-Content-Digest`` against the bytes),
* an index entry's manifest must have the digest the index names,
* the config and every layer are hashed while they stream, and their size
  and digest must match the manifest's descriptor,
* every layer is decompressed while it streams and its uncompressed digest
  must equal the config's ``rootfs.diff_ids`` entry. A destination that
  decompresses anyway (the layer store) may say ``verifies_diff_ids = True``
  and check that digest itself, so the bytes are inflated once, not twice;
  with ``verifies_blob_digests = True`` as well it also checks the blob's
  sha256 digest and size, and the engine hands it the bytes untouched as
  they arrive (it still stops a blob that runs past its size).

A mismatch raises :class:`~crio.image.digest.DigestMismatchError` naming the
blob, from inside the stream the destination consumes, so the destination
drops what it got; the caller then closes the destination without commit
and nothing of the image stays. The policy is checked on the top-level
manifest and its signatures before any blob moves.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

from crio.errors import CrioError
from crio.image import compression, convert
from crio.image import manifest as mf
from crio.image.digest import DigestMismatchError, Hasher, digest_of, expect_digest
from crio.image.policy import Policy, PolicyImage
from crio.image.reference import Reference, validate_digest
from crio.image.signature import render_payload, sign
from crio.image.transport import BlobInfo, ImageDestination, ImageSource, LayerCompression

__all__ = ["CopyOptions", "CopyResult", "Progress", "copy_image"]

log = logging.getLogger("crio.image")

#: Bytes gathered before hashing/decompressing them in a worker thread.
_BATCH = 1 << 20
#: The largest config blob accepted.
_MAX_CONFIG = 32 << 20
#: The largest manifest accepted (as distribution's).
MAX_MANIFEST = 4 << 20


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of a blob's copy, for progress bars."""

    kind: str  # "start", "advance", "skip", "done"
    digest: str
    index: int  # layer position (base first); -1: the config
    total: int  # bytes expected, -1 when unknown
    done: int = 0


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class CopyOptions:
    platform: mf.Platform = field(default_factory=mf.host_platform)
    max_parallel: int = 6
    #: checked on the source before any blob moves; None: no check (push, save)
    policy: Policy | None = None
    policy_transport: str = ""
    policy_identity: str = ""
    #: the digest the reference names, which the top-level manifest must have
    expected_digest: str = ""
    #: sign the written manifest with this GPG key, naming ``sign_identity``
    sign_by: str = ""
    sign_identity: Reference | None = None
    gnupg_home: str | None = None
    remove_signatures: bool = False
    progress: ProgressFn | None = None


@dataclass(frozen=True, slots=True)
class CopyResult:
    committed: str  # what the destination's commit returned (image id or reference)
    manifest_digest: str  # of the manifest written
    source_digest: str  # of the source's top-level manifest
    config_digest: str
    media_type: str


class _LayerState:
    """Hashing and (de)compression of one blob; runs in worker threads, one call at a time."""

    def __init__(
        self, info: BlobInfo, mode: LayerCompression, what: str, decompress: bool = True
    ) -> None:
        self.info = info
        self.mode = mode
        self.what = what
        #: False when the destination checks the diff_id itself (a layer store
        #: decompressing anyway): then only the blob digest is computed here.
        self.decompress = decompress
        self.hasher = Hasher.for_digest(info.digest)
        self.diff_hasher = Hasher()
        self.kind: compression.Compression | None = None
        self.decomp: compression.Decompressor | None = None
        self.comp: compression.Compressor | None = None
        self.head = b""

    def process(self, batch: Sequence[bytes], last: bool = False) -> bytes:
        raw = b"".join(batch)
        self.hasher.update(raw)
        if 0 <= self.info.size < self.hasher.size:
            raise DigestMismatchError(f"{self.what}: more than the {self.info.size} bytes expected")
        if not self.decompress:
            return raw
        if self.kind is None:
            self.head += raw
            if len(self.head) < compression.MAGIC_LENGTH and not last:
                return b""
            raw, self.head = self.head, b""
            self.kind = compression.detect(raw)
            self.decomp = compression.decompressor(self.kind)
            if self.mode is LayerCompression.COMPRESS and self.kind is compression.Compression.NONE:
                self.comp = compression.compressor(compression.Compression.GZIP)
        assert self.decomp is not None
        try:
            plain = self.decomp.feed(raw)
            if last:
                plain += self.decomp.finish()
        except compression.CompressionError as exc:
            raise DigestMismatchError(f"{self.what}: {exc}") from None
        self.diff_hasher.update(plain)
        if self.mode is LayerCompression.DECOMPRESS:
            return plain
        if self.comp is not None:
            return self.comp.feed(plain) + (self.comp.finish() if last else b"")
        return raw

    def finish(self, batch: Sequence[bytes]) -> bytes:
        out = self.process(batch, last=True)
        expect_digest(
            self.what, self.info.digest, self.hasher.digest(), self.info.size, self.hasher.size
        )
        if self.info.index >= 0 and self.info.diff_id and self.decompress:
            got = self.diff_hasher.digest()
            if got != self.info.diff_id:
                raise DigestMismatchError(
                    f"{self.what}: uncompressed digest {got} does not match the config's "
                    f"diff_id {self.info.diff_id}"
                )
        return out


class _Copy:
    def __init__(self, source: ImageSource, dest: ImageDestination, options: CopyOptions) -> None:
        self.source, self.dest, self.options = source, dest, options
        self.sem = asyncio.Semaphore(max(1, options.max_parallel))
        self.diff_ids: dict[int, str] = {}

    def _progress(self, kind: str, info: BlobInfo, done: int = 0) -> None:
        if self.options.progress is not None:
            self.options.progress(Progress(kind, info.digest, info.index, info.size, done))

    def _what(self, info: BlobInfo, count: int) -> str:
        if info.index < 0:
            return f"config blob {info.digest}"
        return f"layer blob {info.digest} (layer {info.index + 1} of {count})"

    async def _stream(
        self, info: BlobInfo, mode: LayerCompression, what: str
    ) -> AsyncIterator[bytes]:
        """The blob's bytes for the destination, checked on the way.

        Holds one of ``max_parallel`` transfer slots while the bytes move
        (not while the destination waits before or after them, for example
        for a layer's parent: that never blocks another blob's transfer).
        """
        delegated = (
            mode is LayerCompression.PRESERVE
            and bool(info.diff_id)
            and getattr(self.dest, "verifies_diff_ids", False)
        )
        async with self.sem:
            self._progress("start", info)
            if (
                delegated
                and info.digest.startswith("sha256:")
                and getattr(self.dest, "verifies_blob_digests", False)
            ):
                chunks = self._passthrough(info, what)
            else:
                chunks = self._checked(info, mode, what, delegated)
            async for chunk in chunks:
                yield chunk

    async def _passthrough(self, info: BlobInfo, what: str) -> AsyncIterator[bytes]:
        """The bytes as they arrive: the destination hashes and inflates them itself."""
        done = 0
        step = _BATCH
        async for chunk in self.source.blob(info):
            done += len(chunk)
            if 0 <= info.size < done:
                raise DigestMismatchError(f"{what}: more than the {info.size} bytes expected")
            if done >= step:
                self._progress("advance", info, done)
                step = done + _BATCH
            yield chunk
        if info.index >= 0:
            self.diff_ids[info.index] = info.diff_id
        self._progress("done", info, done)

    async def _checked(
        self, info: BlobInfo, mode: LayerCompression, what: str, delegated: bool
    ) -> AsyncIterator[bytes]:
        """Hash (and inflate or compress, as ``mode`` says) in worker threads, a MiB at a time."""
        state = _LayerState(info, mode, what, decompress=not delegated)
        batch: list[bytes] = []
        pending = 0
        async for chunk in self.source.blob(info):
            batch.append(chunk)
            pending += len(chunk)
            if pending >= _BATCH:
                out = await asyncio.to_thread(state.process, batch)
                self._progress("advance", info, state.hasher.size)
                batch, pending = [], 0
                if out:
                    yield out
        out = await asyncio.to_thread(state.finish, batch)
        if info.index >= 0:
            self.diff_ids[info.index] = info.diff_id if delegated else state.diff_hasher.digest()
        self._progress("done", info, state.hasher.size)
        if out:
            yield out

    async def read_config(self, info: BlobInfo) -> bytes:
        if info.size > _MAX_CONFIG:
            raise CrioError(f"config blob {info.digest} is {info.size} bytes, too large")
        hasher = Hasher.for_digest(info.digest)
        parts = []
        async for chunk in self.source.blob(info):
            hasher.update(chunk)
            if hasher.size > _MAX_CONFIG:
                raise CrioError(f"config blob {info.digest} is larger than {_MAX_CONFIG} bytes")
            parts.append(chunk)
        expect_digest(
            f"config blob {info.digest}", info.digest, hasher.digest(), info.size, hasher.size
        )
        return b"".join(parts)

    async def put_config(self, info: BlobInfo, data: bytes) -> BlobInfo:
        present = await self.dest.has_blob(info)
        if present is not None:
            return present

        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.dest.put_blob(info, one())

    async def copy_layer(self, info: BlobInfo, count: int) -> BlobInfo:
        present = await self.dest.has_blob(info)
        if present is not None:
            self._progress("skip", info)
            if info.diff_id:
                self.diff_ids[info.index] = info.diff_id
            return present
        what = self._what(info, count)
        stream = self._stream(info, self.dest.layer_compression, what)
        try:
            return await self.dest.put_blob(info, stream)
        finally:
            await stream.aclose()  # frees its transfer slot if the destination stopped early

    async def copy_layers(self, layers: Sequence[BlobInfo]) -> list[BlobInfo]:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.copy_layer(info, len(layers))) for info in layers]
        except BaseExceptionGroup as group_error:
            first = group_error.exceptions[0]
            for exc in group_error.exceptions:
                if isinstance(exc, CrioError):
                    first = exc
                    break
            raise first from None
        return [task.result() for task in tasks]


def _diff_ids(config: bytes, layer_count: int) -> list[str]:
    try:
        doc = json.loads(config)
        ids = doc["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise mf.ManifestError(f"image config has no rootfs.diff_ids: {exc}") from None
    if not isinstance(ids, list) or len(ids) != layer_count:
        raise mf.ManifestError(
            f"image config lists {len(ids) if isinstance(ids, list) else '?'} diff_ids "
            f"for {layer_count} layers"
        )
    return [validate_digest(str(d), f"rootfs.diff_ids[{i}]") for i, d in enumerate(ids)]


async def _resolve(
    copy: _Copy, top: bytes, top_type: str
) -> tuple[bytes, str, mf.ImageManifest | mf.Schema1Manifest, bool]:
    parsed = mf.parse(top, top_type)
    if not isinstance(parsed, mf.Index):
        return top, parsed.media_type, parsed, False
    entry = mf.choose_instance(parsed, copy.options.platform)
    data, media_type = await copy.source.manifest(entry.digest)
    got = mf.manifest_digest(data, media_type, entry.digest.partition(":")[0])
    expect_digest(f"manifest {entry.digest} of the index", entry.digest, got, entry.size, len(data))
    instance = mf.parse(data, media_type)
    if isinstance(instance, mf.Index):
        raise mf.ManifestError(f"index entry {entry.digest} is itself an index")
    await copy.dest.put_index(top, parsed.media_type)
    return data, instance.media_type, instance, True


def _layer_infos(
    manifest: mf.ImageManifest | mf.Schema1Manifest, diff_ids: Sequence[str]
) -> list[BlobInfo]:
    layers = mf.layer_descriptors(manifest)
    return [
        BlobInfo(d.digest, d.size, d.media_type, diff_ids[i] if diff_ids else "", i)
        for i, d in enumerate(layers)
    ]


def _out_type(dest: ImageDestination, source_type: str) -> str:
    supported = list(dest.supported_manifest_types)
    if source_type in supported:
        return source_type
    for kind in supported:
        if kind in mf.IMAGE_TYPES:
            return kind
    raise mf.ManifestError(
        f"destination takes none of the manifest types crio can write: {supported}"
    )


async def _signatures(copy: _Copy, rewritten: bool, digest: str) -> list[bytes]:
    options = copy.options
    sigs: list[bytes] = []
    if not options.remove_signatures:
        existing = await copy.source.signatures()
        if existing and rewritten:
            log.warning("dropping %d signature(s): the manifest had to be rewritten", len(existing))
        elif existing:
            sigs.extend(existing)
    if options.sign_by:
        if options.sign_identity is None:
            raise CrioError("--sign-by needs a docker reference for the signature")
        payload = render_payload(digest, options.sign_identity)
        sigs.append(await asyncio.to_thread(sign, payload, options.sign_by, options.gnupg_home))
    return sigs


_Written = tuple[BlobInfo, bytes, str, bool]  # config as stored, manifest, its type, rewritten?


async def _copy_schema1(
    copy: _Copy, data: bytes, media_type: str, manifest: mf.Schema1Manifest
) -> _Written:
    """Layers first (their diff_ids are known only once inflated), then a built config."""
    dest = copy.dest
    stored_layers = await copy.copy_layers(_layer_infos(manifest, ()))
    diff_ids = [copy.diff_ids[i] for i in range(len(stored_layers))]
    config = convert.schema1_to_config(manifest, diff_ids)
    config_info = BlobInfo(digest_of(config), len(config), mf.DOCKER_CONFIG)
    stored_config = await copy.put_config(config_info, config)
    if media_type in dest.supported_manifest_types:
        return stored_config, data, media_type, False
    out_type = _out_type(dest, mf.DOCKER_SCHEMA2)
    new = mf.ImageManifest(
        mf.DOCKER_SCHEMA2,
        mf.Descriptor(
            stored_config.media_type or mf.DOCKER_CONFIG, stored_config.digest, stored_config.size
        ),
        tuple(
            mf.Descriptor(s.media_type or mf.DOCKER_LAYER_GZIP, s.digest, s.size)
            for s in stored_layers
        ),
    )
    return (
        stored_config,
        convert.render_manifest(convert.to_media_type(new, out_type)),
        out_type,
        True,
    )


async def _copy_v2(
    copy: _Copy, data: bytes, media_type: str, manifest: mf.ImageManifest
) -> _Written:
    """Config first (its diff_ids check the layers), then the layers in parallel."""
    config_info = BlobInfo(manifest.config.digest, manifest.config.size, manifest.config.media_type)
    config = await copy.read_config(config_info)
    diff_ids = _diff_ids(config, len(manifest.layers))
    stored_config = await copy.put_config(config_info, config)
    overrides = await copy.source.layer_infos()
    infos = list(overrides) if overrides else _layer_infos(manifest, diff_ids)
    infos = [replace(info, diff_id=diff_ids[i], index=i) for i, info in enumerate(infos)]
    stored_layers = await copy.copy_layers(infos)
    out_type = _out_type(copy.dest, media_type)
    original = [BlobInfo(d.digest, d.size, d.media_type) for d in manifest.layers]
    same = [
        BlobInfo(s.digest, s.size, s.media_type or o.media_type)
        for s, o in zip(stored_layers, original, strict=True)
    ]
    if out_type == media_type and same == original and stored_config.digest == config_info.digest:
        return stored_config, data, media_type, False
    new = mf.ImageManifest(
        media_type,
        mf.Descriptor(manifest.config.media_type, stored_config.digest, stored_config.size),
        tuple(
            mf.Descriptor(
                s.media_type or d.media_type,
                s.digest,
                s.size,
                urls=d.urls,
                annotations=d.annotations,
            )
            for s, d in zip(stored_layers, manifest.layers, strict=True)
        ),
        manifest.annotations,
    )
    return (
        stored_config,
        convert.render_manifest(convert.to_media_type(new, out_type)),
        out_type,
        True,
    )


async def copy_image(
    source: ImageSource, dest: ImageDestination, options: CopyOptions
) -> CopyResult:
    """Copy one image (the platform's instance of an index); see the module docstring."""
    copy = _Copy(source, dest, options)
    top, top_type = await source.manifest()
    if len(top) > MAX_MANIFEST:
        raise mf.ManifestError(
            f"manifest of {source.reference} is larger than {MAX_MANIFEST} bytes"
        )
    top_type = top_type or mf.guess_media_type(top)
    algorithm = options.expected_digest.partition(":")[0] if options.expected_digest else "sha256"
    source_digest = mf.manifest_digest(top, top_type, algorithm)
    if options.expected_digest:
        expect_digest(f"manifest of {source.reference}", options.expected_digest, source_digest)
    if options.policy is not None:
        await options.policy.check(
            PolicyImage(
                options.policy_transport, source.docker_reference, source_digest, source.signatures
            ),
            options.policy_identity or source.reference,
        )
    data, media_type, manifest, from_index = await _resolve(copy, top, top_type)
    if isinstance(manifest, mf.Schema1Manifest):
        stored_config, out, out_type, rewritten = await _copy_schema1(
            copy, data, media_type, manifest
        )
    else:
        stored_config, out, out_type, rewritten = await _copy_v2(copy, data, media_type, manifest)
    digest = mf.manifest_digest(out, out_type)
    await dest.put_manifest(out, out_type)
    sigs = await _signatures(copy, rewritten or from_index, digest)
    if sigs:
        await dest.put_signatures(sigs)
    committed = await dest.commit()
    return CopyResult(committed, digest, source_digest, stored_config.digest, out_type)
