"""The ``oci:DIR[:REF]`` transport: an OCI image layout directory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.transport_oci.transport import OCITransport

__all__ = ["OCITransport", "crio_image_transport"]


@hookimpl(trylast=True)
def crio_image_transport(name: str) -> OCITransport | None:
    if name != "oci":
        return None
    # The layout code is imported when a pull or push names the transport.
    from crio_plugins.transport_oci.transport import OCITransport

    return OCITransport()


def __getattr__(name: str) -> Any:
    if name == "OCITransport":
        from crio_plugins.transport_oci.transport import OCITransport

        return OCITransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
