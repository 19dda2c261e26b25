"""Archive transports: ``docker-archive:FILE[:NAME:TAG]`` and ``oci-archive:FILE[:REF]``.

An oci-archive is a tar of an OCI layout; reading extracts it into a private
temporary directory, writing builds the layout there and tars it into FILE
at commit (atomically).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.transport_archive.archive import DockerArchiveTransport, OCIArchiveTransport

__all__ = ["DockerArchiveTransport", "OCIArchiveTransport", "crio_image_transport"]


@hookimpl(trylast=True)
def crio_image_transport(name: str) -> DockerArchiveTransport | OCIArchiveTransport | None:
    if name not in ("docker-archive", "oci-archive"):
        return None
    # The archive code is imported when a pull or push names one of these transports.
    from crio_plugins.transport_archive.archive import DockerArchiveTransport, OCIArchiveTransport

    return DockerArchiveTransport() if name == "docker-archive" else OCIArchiveTransport()


def __getattr__(name: str) -> Any:
    if name == "DockerArchiveTransport":
        from crio_plugins.transport_archive.archive import DockerArchiveTransport

        return DockerArchiveTransport
    if name == "OCIArchiveTransport":
        from crio_plugins.transport_archive.archive import OCIArchiveTransport

        return OCIArchiveTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
