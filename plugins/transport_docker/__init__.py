"""The ``docker://`` transport: images in registries speaking the Registry HTTP API v2.

``docker://HOST[:PORT]/NAME[:TAG|@DIGEST]``; a short name is resolved by core
through registries.conf before it reaches this plugin. Mirrors, insecure and
blocked registries come from the context's registries.conf.

The transport and its HTTP client (httpx) are imported when a pull first asks
for ``docker``, not when crio loads its plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.transport_docker.transport import DockerTransport

__all__ = ["DockerTransport", "crio_image_transport"]


@hookimpl(trylast=True)
def crio_image_transport(name: str) -> DockerTransport | None:
    if name != "docker":
        return None
    from crio_plugins.transport_docker.transport import DockerTransport

    return DockerTransport()


def __getattr__(name: str) -> Any:
    if name == "DockerTransport":
        from crio_plugins.transport_docker.transport import DockerTransport

        return DockerTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
