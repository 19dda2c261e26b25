"""DockerTransport: opens registry sources and destinations (see the package docstring)."""

from __future__ import annotations

from crio.errors import InvalidRequestError
from crio.image import registries as registries_conf
from crio.image.reference import Reference, normalize, parse
from crio.image.transport import TransportContext

from .destination import DockerDestination
from .source import DockerSource, client_for

__all__ = ["DockerTransport"]


class DockerTransport:
    name = "docker"

    def _parse(self, reference: str) -> Reference:
        text = reference.removeprefix("//")
        if reference.startswith("/") and not reference.startswith("//"):
            raise InvalidRequestError(
                f"invalid docker reference {reference!r}: expected docker://NAME"
            )
        return parse(text)

    def validate_reference(self, reference: str) -> str:
        ref = self._parse(reference)
        return str(normalize(ref)) if ref.qualified else str(ref)

    def policy_identity(self, reference: str) -> str:
        ref = normalize(self._parse(reference))
        return str(ref if ref.tag or ref.digest else ref.with_tag("latest"))

    def _qualified(self, reference: str) -> Reference:
        ref = self._parse(reference)
        if not ref.qualified:
            raise InvalidRequestError(
                f"docker reference {reference!r} is a short name; "
                "resolve it through registries.conf"
            )
        ref = normalize(ref)
        return ref if ref.tag or ref.digest else ref.with_tag("latest")

    def _registries(self, context: TransportContext) -> registries_conf.Registries:
        return context.registries or registries_conf.load()

    async def open_source(self, reference: str, context: TransportContext) -> DockerSource:
        ref = self._qualified(reference)
        sources = self._registries(context).pull_sources(ref)
        return DockerSource(ref, sources, context)

    async def login(self, registry: str, context: TransportContext) -> None:
        """Check ``context.credentials`` against ``registry`` (``kpod login``).

        :raises PermissionDeniedError: the registry or its token server refuses them.
        """
        host = registry.removeprefix("https://").removeprefix("http://").split("/")[0]
        if not host:
            raise InvalidRequestError("login: no registry given")
        insecure = self._registries(context).is_insecure(host)
        client = client_for(Reference(host, "x"), insecure, context)
        try:
            await client.check_login()
        finally:
            await client.aclose()

    async def open_destination(
        self, reference: str, context: TransportContext
    ) -> DockerDestination:
        ref = self._qualified(reference)
        # Pushes go to the location (never to a mirror), with its insecure flag.
        location = self._registries(context).pull_sources(ref)[-1]
        return DockerDestination(location.reference, location.insecure, context)
