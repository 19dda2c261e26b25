"""crio's image, layer and container store, in containers/storage's layout.

What is on disk (``DRIVER`` is ``overlay`` or ``vfs``), so that skopeo,
podman and buildah read what crio stored and the other way round::

    ROOT/DRIVER-layers/layers.json, layers.lock, ID.tar-split.gz
    ROOT/DRIVER-images/images.json, images.lock, ID/<big data files>
    ROOT/DRIVER-containers/containers.json, containers.lock, ID/userdata/
    ROOT/DRIVER/...                 the graph driver's layers (overlay: ID/{diff,link,
                                    lower,work,merged}, l/ short links; vfs: dir/ID)
    RUNROOT/DRIVER-layers/mountpoints.json, mountpoints.lock, incomplete/ID.lock
    RUNROOT/DRIVER-containers/ID/userdata/

The Store API (every method is a coroutine unless marked; errors are
:mod:`crio.errors` classes: NotFoundError, AlreadyExistsError, WrongStateError,
InvalidRequestError for bad blobs, StorageError for damage)::

    store = await Store.open(root, runroot, driver="", options=(), plugins=None)
        # driver "" = the one ROOT already uses, else overlay if the kernel has
        # it, else vfs (logged). Removes what crashed writers left behind.
    await store.close()

    # layers (Layer records: id, parent, names, diff_digest/diff_size,
    #         compressed_digest/compressed_size, compression, created ...)
    await store.layers() / store.layer(id_or_name)
    await store.find_layer(diff_digest, parent)          # already here? skip the pull
    await store.layers_by_diff_digest(d) / layers_by_compressed_digest(d)
    await store.put_layer(blob, parent=None, diff_digest=None, compressed_digest=None)
        # = start_layer(...) -> PendingLayer; .apply(blob, ...); .commit() or .abort().
        # With parallel_apply (overlay), start_layer(parent_pending=True) lets a
        # pull apply an image's layers at once, committing them parents first.
        # blob: bytes | Path | binary file | async iterator of bytes; gzip, zstd or
        # plain tar; digests verified; id = containers/image's id for
        # (parent, diff_digest), so an existing layer is returned at once
    store.layer_tar(id)       # async iterator: the original tar again (tar-split)
    await store.layer_changes(id) / delete_layer(id)

    # images (Image records: id = config digest hex, names, digest, top_layer ...)
    await store.images() / store.image(id | name | id-prefix | sha256:DIGEST | NAME@DIGEST)
    await store.create_image(config=..., top_layer=..., manifest=..., names=[...])
    await store.image_config(ref) / image_manifest(ref) / image_big_data(ref, key)
    await store.set_image_big_data(ref, key, data)
    await store.tag_image(ref, name) / untag_image(ref, name) / set_image_names(ref, names)
    await store.image_layers(ref) / image_size(ref)
    await store.delete_image(ref, force=False)  # WrongStateError if a container uses it
    await store.mount_image(ref) / unmount_image(ref)   # read-only

    # containers (Container records: id, names, image, layer, metadata)
    await store.create_container(image_ref, names=[...], container_id=None, metadata="")
    await store.mount_container(id) -> Path   # reference-counted across processes
    await store.unmount_container(id, force=False) -> references left
    await store.delete_container(id)
    await store.container_changes(id)
    store.container_dir(id) / store.container_run_dir(id)   # plain methods

Concurrency: every change happens under containers/storage's lock files
(layers, then images, then containers; POSIX record locks) and is written
atomically. A layer is applied outside the layers lock, known only to the
driver and marked by a held lock file in ``RUNROOT/DRIVER-layers/incomplete``;
it becomes visible once complete. :meth:`Store.open` removes layers whose
writer died (and containers/storage layers flagged ``incomplete``).

Pure protocol code lives in :mod:`crio.storage.tarstream` (tar reader),
:mod:`crio.storage.tarapply` (what each member means, hostile-name checks)
and :mod:`crio.storage.tarsplit`.
"""

from crio.storage._layerwrite import PendingLayer
from crio.storage.driver import Change, ChangeKind, GraphDriver, WhiteoutFormat
from crio.storage.records import Container, Image, Layer
from crio.storage.store import Blob, DeletedImage, Store, select_driver

__all__ = [
    "ApplyPolicy",
    "ApplyResult",
    "Blob",
    "Change",
    "ChangeKind",
    "Container",
    "DeletedImage",
    "GraphDriver",
    "HostileLayerError",
    "Image",
    "Layer",
    "LayerFormatError",
    "PendingLayer",
    "Store",
    "WhiteoutFormat",
    "apply_tar",
    "select_driver",
    "tar_directory",
]

#: Names whose modules (the tar reader, applier and writer) load on first use.
_LAZY = {
    "ApplyResult": "crio.storage._applier",
    "apply_tar": "crio.storage._applier",
    "ApplyPolicy": "crio.storage.tarapply",
    "HostileLayerError": "crio.storage.tarapply",
    "LayerFormatError": "crio.storage.tarapply",
    "tar_directory": "crio.storage.tarwrite",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
