"""Pulling: from a name as a user or the kubelet writes it to an image in the store.

1. The transport is the reference's prefix (``oci:``, ``docker-archive:``,
   ``docker://``) when a plugin claims it, else ``default_transport``.
2. A short docker name becomes its candidates (registries.conf aliases, then
   the search registries); each is tried in order until one is found.
3. The policy for the candidate is checked on its manifest and signatures,
   then the copy engine moves it into the destination, verifying everything.

:class:`Puller` also makes concurrent pulls of one image share one download.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from crio.errors import (
    CrioError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    UnsupportedError,
)
from crio.image import lookaside as lookaside_conf
from crio.image import manifest as mf
from crio.image import policy as policy_conf
from crio.image import registries as registries_conf
from crio.image.auth import Credentials
from crio.image.reference import Reference, normalize, parse
from crio.image.transport import ImageDestination, ImageTransport, TransportContext

if TYPE_CHECKING:
    from crio.config import Config
    from crio.image.copy import CopyResult, ProgressFn
    from crio.plugins import Plugins

__all__ = ["ImageSettings", "PullResult", "Puller", "split_transport"]

log = logging.getLogger("crio.image")

#: Where the copy goes: given the docker reference pulled (None for non-docker
#: sources), open a destination.
DestinationFactory = Callable[[Reference | None, str], Awaitable[ImageDestination]]


@dataclass(frozen=True, slots=True)
class ImageSettings:
    """``[crio.image]`` and the files it names, loaded once per operation."""

    default_transport: str = "docker://"
    registries: registries_conf.Registries = field(default_factory=registries_conf.Registries)
    signature_policy: str = ""
    lookaside: lookaside_conf.Lookaside = field(default_factory=lookaside_conf.Lookaside)
    auth_files: tuple[str, ...] = ()
    max_parallel: int = 6
    tmp_dir: str = ""
    tls_verify: bool = True
    platform: mf.Platform = field(default_factory=mf.host_platform)

    @classmethod
    def from_config(cls, config: Config, **overrides: object) -> ImageSettings:
        image = config.crio.image
        settings = cls(
            default_transport=image.default_transport,
            registries=registries_conf.load(
                image.registries_conf, image.registries, image.insecure_registries
            ),
            signature_policy=image.signature_policy,
            lookaside=lookaside_conf.load(image.registries_d),
            auth_files=(image.global_auth_file,) if image.global_auth_file else (),
            max_parallel=image.max_parallel_downloads,
            tmp_dir=image.big_files_temporary_dir,
        )
        return replace(settings, **overrides)  # type: ignore[arg-type]

    def context(
        self, credentials: Credentials | None = None, store: object = None
    ) -> TransportContext:
        return TransportContext(
            credentials=credentials,
            auth_files=self.auth_files,
            registries=self.registries,
            lookaside=self.lookaside,
            tls_verify=self.tls_verify,
            platform_os=self.platform.os,
            platform_architecture=self.platform.architecture,
            platform_variant=self.platform.variant,
            max_parallel=self.max_parallel,
            tmp_dir=self.tmp_dir,
            store=store,
        )


@dataclass(frozen=True, slots=True)
class PullResult:
    image_id: str
    #: what was pulled, fully qualified (``docker.io/library/busybox:latest``)
    reference: str
    manifest_digest: str
    source_digest: str
    copy: CopyResult


def split_transport(plugins: Plugins, text: str, default: str) -> tuple[ImageTransport, str, str]:
    """(transport, its name, the rest) for ``text``; unknown prefixes mean ``default``."""
    if not text:
        raise InvalidRequestError("image reference is empty")
    name, sep, rest = text.partition(":")
    if sep and name and "/" not in name and "." not in name:
        transport = plugins.image_transport(name)
        if transport is not None:
            return transport, name, rest
    default_name = default.split(":", 1)[0]
    transport = plugins.image_transport(default_name)
    if transport is None:
        raise UnsupportedError(f"no plugin provides the default transport {default!r}")
    return transport, default_name, text


def _retryable(exc: CrioError) -> bool:
    return isinstance(
        exc, NotFoundError | UnavailableError | PermissionDeniedError
    ) and not isinstance(exc, policy_conf.PolicyRejectedError | registries_conf.BlockedError)


class Puller:
    """Pulls for one process; concurrent pulls of the same image share one copy."""

    def __init__(self) -> None:
        self._inflight: dict[tuple[object, ...], asyncio.Task[PullResult]] = {}

    def candidates(
        self, plugins: Plugins, text: str, settings: ImageSettings
    ) -> tuple[ImageTransport, str, list[str]]:
        transport, name, rest = split_transport(plugins, text, settings.default_transport)
        if name != "docker":
            return transport, name, [transport.validate_reference(rest)]
        ref = parse(rest.removeprefix("//"))
        refs = settings.registries.candidates(ref) if not ref.qualified else [normalize(ref)]
        return (
            transport,
            name,
            [str(r if r.tag or r.digest else r.with_tag("latest")) for r in refs],
        )

    async def pull(
        self,
        plugins: Plugins,
        text: str,
        settings: ImageSettings,
        destination: DestinationFactory,
        *,
        credentials: Credentials | None = None,
        store: object = None,
        progress: ProgressFn | None = None,
        share_key: str = "",
    ) -> PullResult:
        """Pull ``text``; callers passing the same ``share_key`` and image share one pull."""
        transport, name, candidates = self.candidates(plugins, text, settings)
        key = (share_key, name, *candidates, credentials)
        task = self._inflight.get(key) if share_key else None
        if task is None:
            task = asyncio.ensure_future(
                self._pull(
                    transport, name, candidates, settings, destination, credentials, store, progress
                )
            )
            if share_key:
                self._inflight[key] = task
                task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        else:
            log.info("joining the pull of %s already in progress", text)
        # A caller that gives up must not cancel the pull others wait for.
        return await asyncio.shield(task)

    async def _pull(
        self,
        transport: ImageTransport,
        name: str,
        candidates: list[str],
        settings: ImageSettings,
        destination: DestinationFactory,
        credentials: Credentials | None,
        store: object,
        progress: ProgressFn | None,
    ) -> PullResult:
        errors: list[str] = []
        last: CrioError | None = None
        for i, candidate in enumerate(candidates):
            try:
                return await self._pull_one(
                    transport, name, candidate, settings, destination, credentials, store, progress
                )
            except CrioError as exc:
                if not _retryable(exc) or (i == len(candidates) - 1 and not errors):
                    raise
                log.info("pulling %s failed: %s", candidate, exc)
                errors.append(f"{candidate}: {exc}")
                last = exc
        assert last is not None
        raise type(last)("no candidate of the short name could be pulled: " + "; ".join(errors))

    async def _pull_one(
        self,
        transport: ImageTransport,
        name: str,
        reference: str,
        settings: ImageSettings,
        destination: DestinationFactory,
        credentials: Credentials | None,
        store: object,
        progress: ProgressFn | None,
    ) -> PullResult:
        from crio.image.copy import CopyOptions, copy_image  # the copy engine, on first pull

        policy = await asyncio.to_thread(policy_conf.load, settings.signature_policy)
        context = settings.context(credentials, store)
        docker_ref = normalize(parse(reference)) if name == "docker" else None
        source = await transport.open_source(reference, context)
        try:
            dest = await destination(docker_ref or source.docker_reference, reference)
            try:
                options = CopyOptions(
                    platform=settings.platform,
                    max_parallel=settings.max_parallel,
                    policy=policy,
                    policy_transport=name,
                    policy_identity=transport.policy_identity(reference),
                    expected_digest=docker_ref.digest if docker_ref else "",
                    progress=progress,
                )
                result = await copy_image(source, dest, options)
            finally:
                await dest.close()
        finally:
            await source.close()
        return PullResult(
            result.committed, reference, result.manifest_digest, result.source_digest, result
        )
