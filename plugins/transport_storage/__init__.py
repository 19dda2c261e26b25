"""The ``containers-storage:`` transport: images in crio's own store.

``containers-storage:[DRIVER@ROOT+RUNROOT]NAME`` (the bracket part is optional;
without it the context's store is used). As a destination it applies every
layer while its bytes arrive. With a driver that keeps each layer's diff
apart (overlay: ``Store.parallel_apply``) the layers of an image are applied
at the same time, created and recorded in parent order. With the others
(vfs copies the parent) a layer whose parent is not applied yet is staged
to a temporary file and applied when its parent is.
Nothing becomes an image before :meth:`StorageDestination.commit`, and
:meth:`~StorageDestination.close` without commit removes the layers this copy
created. As a source it serves the layers uncompressed (their original tar,
rebuilt from tar-split), so pushes recompress them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crio.plugins import hookimpl

if TYPE_CHECKING:
    from crio_plugins.transport_storage.transport import StorageTransport

__all__ = ["StorageDestination", "StorageSource", "StorageTransport", "crio_image_transport"]


@hookimpl(trylast=True)
def crio_image_transport(name: str) -> StorageTransport | None:
    if name != "containers-storage":
        return None
    # The store's copy machinery is imported by the first pull, push or load.
    from crio_plugins.transport_storage.transport import StorageTransport

    return StorageTransport()


def __getattr__(name: str) -> Any:
    if name == "StorageDestination":
        from crio_plugins.transport_storage.transport import StorageDestination

        return StorageDestination
    if name == "StorageSource":
        from crio_plugins.transport_storage.transport import StorageSource

        return StorageSource
    if name == "StorageTransport":
        from crio_plugins.transport_storage.transport import StorageTransport

        return StorageTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
