"""OCITransport: an OCI image layout directory (see the package docstring)."""

from __future__ import annotations

from crio.image.oci_layout import LayoutDestination, LayoutSource, split_reference
from crio.image.transport import TransportContext

__all__ = ["OCITransport"]


class OCITransport:
    name = "oci"

    def validate_reference(self, reference: str) -> str:
        path, ref = split_reference(reference)
        return f"{path}:{ref}" if ref else str(path)

    def policy_identity(self, reference: str) -> str:
        return self.validate_reference(reference)

    async def open_source(self, reference: str, context: TransportContext) -> LayoutSource:
        path, ref = split_reference(reference)
        return LayoutSource(path, ref, f"oci:{reference}")

    async def open_destination(
        self, reference: str, context: TransportContext
    ) -> LayoutDestination:
        path, ref = split_reference(reference)
        return LayoutDestination(path, ref)
