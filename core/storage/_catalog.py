"""Image and container methods of :class:`crio.storage.Store` (split out for size)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import shutil
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crio.errors import (
    AlreadyExistsError,
    InvalidRequestError,
    NotFoundError,
    StorageError,
    WrongStateError,
)
from crio.storage import _recordops as ops
from crio.storage._files import atomic_write
from crio.storage._sharedview import _SharedView
from crio.storage.driver import Change
from crio.storage.records import Container, Image, Layer, now, parse_time

if TYPE_CHECKING:
    from crio.storage._recordfile import RecordFile
    from crio.storage.driver import GraphDriver

__all__ = ["DeletedImage", "big_data_file_name"]


@dataclass(frozen=True, slots=True)
class DeletedImage:
    """What :meth:`Store.delete_image` removed."""

    image_id: str
    names: tuple[str, ...]
    layers: tuple[str, ...]
    containers: tuple[str, ...] = ()


class _Catalog(_SharedView):
    """Images and containers; :class:`crio.storage.Store` provides the rest."""

    driver: GraphDriver
    images_dir: Path
    containers_dir: Path
    run_containers_dir: Path
    _layers: RecordFile[Layer]
    _images: RecordFile[Image]
    _containers: RecordFile[Container]

    if TYPE_CHECKING:

        def _locked(
            self, layers: bool = False, images: bool = False, containers: bool = False
        ) -> AbstractAsyncContextManager[None]: ...
        async def layers(self) -> list[Layer]: ...
        async def _remove_layers(self, layer_ids: Sequence[str]) -> None: ...
        async def _mount_layer(self, layer_id: str, options: Sequence[str]) -> Path: ...
        async def _unmount_layer(self, layer_id: str, force: bool = False) -> int: ...
        async def layer_changes(self, key: str) -> Sequence[Change]: ...
        def container_dir(self, container_id: str) -> Path: ...
        def container_run_dir(self, container_id: str) -> Path: ...

    # -- images ----------------------------------------------------------

    async def images(self) -> list[Image]:
        """Every image: this store's, then those of the read-only stores."""
        async with self._locked(images=True):
            own = self._images.read()
        return await self._with_shared(own, "images")

    async def image(self, key: str) -> Image:
        """An image by id, ``sha256:ID``, name, id prefix, manifest digest or ``NAME@DIGEST``.

        :raises NotFoundError:
        """
        return ops.find_image(await self.images(), key)

    def _big_data_path(self, image_id: str, key: str) -> Path:
        return self.images_dir / image_id / big_data_file_name(key)

    async def image_big_data(self, key: str, name: str) -> bytes:
        """One big-data item of an image (``manifest``, the config's ``sha256:ID`` ...)."""
        image = await self.image(key)
        if name not in image.big_data_names:
            raise NotFoundError(f"image {image.id} has no data item {name!r}")
        holder = await self._shared_holder("images", image.id)
        path = (
            holder.big_data_path(image.id, big_data_file_name(name))
            if holder is not None
            else self._big_data_path(image.id, name)
        )
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise StorageError(f"image {image.id}: data item {name!r} is missing") from None
        except OSError as exc:
            raise StorageError(f"image {image.id}: data item {name!r}: {exc}") from exc

    async def image_config(self, key: str) -> bytes:
        """The image's config blob (big data named by the config digest)."""
        image = await self.image(key)
        return await self.image_big_data(image.id, "sha256:" + image.id)

    async def image_manifest(self, key: str) -> bytes:
        image = await self.image(key)
        name = f"manifest-{image.digest}" if image.digest else "manifest"
        if name not in image.big_data_names:
            name = "manifest"
        return await self.image_big_data(image.id, name)

    async def set_image_big_data(self, key: str, name: str, data: bytes) -> None:
        async with self._locked(images=True):
            images = self._images.read()
            image = await self._own_image(images, key)
            image = await self._write_big_data(image, name, data)
            await self._replace_image(images, image)

    async def _write_big_data(self, image: Image, name: str, data: bytes) -> Image:
        if not name:
            raise InvalidRequestError(f"image {image.id}: data item name is empty")
        await asyncio.to_thread(atomic_write, self._big_data_path(image.id, name), data)
        names = (
            image.big_data_names
            if name in image.big_data_names
            else (
                *image.big_data_names,
                name,
            )
        )
        return dataclasses.replace(
            image,
            big_data_names=names,
            big_data_sizes={**image.big_data_sizes, name: len(data)},
            big_data_digests={
                **image.big_data_digests,
                name: "sha256:" + hashlib.sha256(data).hexdigest(),
            },
        )

    async def _replace_image(self, images: list[Image], image: Image) -> None:
        images = [image if i.id == image.id else i for i in images]
        images = ops.with_names_moved(images, image.id, image.names)
        await asyncio.to_thread(self._images.write, images)

    async def create_image(
        self,
        *,
        config: bytes,
        top_layer: str | None,
        manifest: bytes | None = None,
        manifest_digest: str | None = None,
        names: Sequence[str] = (),
        created: str | None = None,
    ) -> Image:
        """Record an image whose layers are in the store; id = sha256 of ``config``.

        :param top_layer: the image's last layer (None for an image without layers).
        :param manifest: stored as big data ``manifest`` and ``manifest-DIGEST``.
        :param names: full references (``docker.io/library/busybox:latest``); a
            name another image has moves to this one (the other may become dangling).
        :param created: RFC 3339; default: the config's ``created``.

        Recording an image that exists adds the names and the manifest.
        """
        image_id = hashlib.sha256(config).hexdigest()
        if manifest is not None and manifest_digest is None:
            manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        if created is None:
            created = _config_created(config) or now()
        async with self._locked(layers=True, images=True):
            known = await self._with_shared(self._layers.read(), "layers")
            if top_layer and not any(x.id == top_layer for x in known):
                raise NotFoundError(f"layer {top_layer} not found for image {image_id}")
            images = self._images.read()
            image = next((i for i in images if i.id == image_id), None)
            if image is None:
                image = Image(id=image_id, top_layer=top_layer or "", created=created)
                images.append(image)
            elif top_layer and image.top_layer != top_layer:
                raise StorageError(
                    f"image {image_id} exists with top layer {image.top_layer}, not {top_layer}"
                )
            merged = tuple(dict.fromkeys([*image.names, *names]))
            history = tuple(dict.fromkeys([*names, *image.names_history]))
            digest = image.digest or manifest_digest or ""
            metadata = image.metadata or json.dumps(
                {"signatures-sizes": {digest: []}} if digest else {}, separators=(",", ":")
            )
            image = dataclasses.replace(
                image, names=merged, names_history=history, digest=digest, metadata=metadata
            )
            image = await self._write_big_data(image, "sha256:" + image_id, config)
            if manifest is not None:
                image = await self._write_big_data(image, f"manifest-{manifest_digest}", manifest)
                image = await self._write_big_data(image, "manifest", manifest)
            await self._replace_image(images, image)
            return image

    async def set_image_names(self, key: str, names: Sequence[str]) -> Image:
        """Give an image exactly ``names`` (taking them from other images)."""
        async with self._locked(images=True):
            images = self._images.read()
            image = await self._own_image(images, key)
            names = tuple(dict.fromkeys(names))
            history = tuple(dict.fromkeys([*names, *image.names_history]))
            image = dataclasses.replace(image, names=names, names_history=history)
            await self._replace_image(images, image)
            return image

    async def tag_image(self, key: str, name: str) -> Image:
        """Add ``name`` to an image (``kpod tag``)."""
        if not name:
            raise InvalidRequestError("tag: the new name is empty")
        image = await self.image(key)
        return await self.set_image_names(image.id, [*image.names, name])

    async def untag_image(self, key: str, name: str) -> Image:
        image = await self.image(key)
        if name not in image.names:
            raise NotFoundError(f"image {image.id} has no name {name!r}")
        return await self.set_image_names(image.id, [n for n in image.names if n != name])

    async def image_layers(self, key: str) -> list[Layer]:
        """The image's layers, base first."""
        image = await self.image(key)
        return list(reversed(ops.chain(await self.layers(), image.top_layer)))

    async def image_size(self, key: str) -> int:
        return sum(layer.diff_size for layer in await self.image_layers(key))

    async def delete_image(self, key: str, force: bool = False) -> DeletedImage:
        """Remove an image and the layers nothing else uses.

        :param force: also remove the containers that use the image; without
            it such an image is refused with :class:`WrongStateError`.
        """
        async with self._locked(layers=True, images=True, containers=True):
            images = self._images.read()
            image = await self._own_image(images, key)
            containers = self._containers.read()
            users = [c for c in containers if c.image == image.id]
            if users and not force:
                listed = ", ".join(c.id[:12] for c in users)
                raise WrongStateError(f"image {image.id} is in use by container(s) {listed}")
            for container in users:
                await self._delete_container_locked(container)
            containers = self._containers.read()
            images = [i for i in images if i.id != image.id]
            await asyncio.to_thread(self._images.write, images)
            await asyncio.to_thread(shutil.rmtree, self.images_dir / image.id, True)
            layers = self._layers.read()
            keep = ops.referenced_layers(layers, images, containers)
            doomed = [x.id for x in ops.chain(layers, image.top_layer) if x.id not in keep]
            await self._remove_layers(doomed)
            return DeletedImage(image.id, image.names, tuple(doomed), tuple(c.id for c in users))

    async def _own_image(self, images: list[Image], key: str) -> Image:
        """The image ``key`` among this store's ``images``; one of a read-only
        store is refused (nothing is written there)."""
        try:
            return ops.find_image(images, key)
        except NotFoundError:
            # The caller holds the images lock: extend its list, do not lock again.
            found = ops.find_image(await self._with_shared(images, "images"), key)
            await self._refuse_shared(found.id, "images")
            raise

    # -- containers ------------------------------------------------------

    async def containers(self) -> list[Container]:
        async with self._locked(containers=True):
            return self._containers.read()

    async def container(self, key: str) -> Container:
        """A container by id, name or id prefix. :raises NotFoundError:"""
        return ops.find(await self.containers(), key, "container")

    async def create_container(
        self,
        image: str | None,
        *,
        names: Sequence[str] = (),
        container_id: str | None = None,
        metadata: str = "",
        mount_label: str = "",
    ) -> Container:
        """Record a container with a new writable layer on the image's top layer.

        :param image: an image reference the store knows (None: an empty rootfs).
        :param metadata: free text (CRI-O keeps JSON with pod and image names).
        :raises AlreadyExistsError: the id or a name is taken.
        """
        container_id = container_id or ops.random_id()
        async with self._locked(layers=True, images=True, containers=True):
            top, image_id = "", ""
            if image:
                images = await self._with_shared(self._images.read(), "images")
                found = ops.find_image(images, image)
                top, image_id = found.top_layer, found.id
            containers = self._containers.read()
            if any(c.id == container_id for c in containers):
                raise AlreadyExistsError(f"container id {container_id} is already in use")
            for name in names:
                if any(name in c.names for c in containers):
                    raise AlreadyExistsError(f"container name {name!r} is already in use")
            layers = self._layers.read()
            layer_id = ops.random_id()
            await self.driver.create(layer_id, top or None, read_write=True)
            layer = Layer(
                id=layer_id,
                names=(f"{names[0]}-layer",) if names else (),
                parent=top,
                created=now(),
                mountlabel=mount_label,
            )
            try:
                await asyncio.to_thread(self._layers.write, [*layers, layer])
            except BaseException:
                await self.driver.remove(layer_id)
                raise
            container = Container(
                id=container_id,
                names=tuple(names),
                image=image_id,
                layer=layer_id,
                metadata=metadata,
                created=now(),
                flags={"MountLabel": mount_label, "ProcessLabel": ""},
            )
            self.container_dir(container_id).mkdir(parents=True, exist_ok=True, mode=0o700)
            self.container_run_dir(container_id).mkdir(parents=True, exist_ok=True, mode=0o700)
            await asyncio.to_thread(self._containers.write, [*containers, container])
            return container

    async def mount_container(self, key: str, options: Sequence[str] = ()) -> Path:
        """Mount the container's root file system; each call needs one :meth:`unmount_container`."""
        async with self._locked(layers=True):
            container = ops.find(await self._containers_unlocked(), key, "container")
            return await self._mount_layer(container.layer, options)

    async def _containers_unlocked(self) -> list[Container]:
        async with self._containers.lock.hold():
            return self._containers.read()

    async def unmount_container(self, key: str, force: bool = False) -> int:
        """Drop one mount reference (all with ``force``); returns the references left."""
        async with self._locked(layers=True):
            container = ops.find(await self._containers_unlocked(), key, "container")
            return await self._unmount_layer(container.layer, force)

    async def mount_image(self, key: str) -> Path:
        """Mount an image's top layer read-only (``kpod mount`` of an image)."""
        async with self._locked(layers=True):
            image = await self._own_image(await self._images_unlocked(), key)
            if not image.top_layer:
                raise WrongStateError(f"image {image.id} has no layers to mount")
            return await self._mount_layer(image.top_layer, ["ro"])

    async def _images_unlocked(self) -> list[Image]:
        async with self._images.lock.hold():
            return self._images.read()

    async def unmount_image(self, key: str, force: bool = False) -> int:
        async with self._locked(layers=True):
            image = await self._own_image(await self._images_unlocked(), key)
            return await self._unmount_layer(image.top_layer, force)

    async def delete_container(self, key: str) -> None:
        """Unmount and remove a container with its writable layer and directories."""
        async with self._locked(layers=True, images=True, containers=True):
            container = ops.find(self._containers.read(), key, "container")
            await self._delete_container_locked(container)

    async def _delete_container_locked(self, container: Container) -> None:
        if container.layer and any(x.id == container.layer for x in self._layers.read()):
            await self._remove_layers([container.layer])
        containers = [c for c in self._containers.read() if c.id != container.id]
        await asyncio.to_thread(self._containers.write, containers)
        for path in (self.containers_dir / container.id, self.run_containers_dir / container.id):
            await asyncio.to_thread(shutil.rmtree, path, True)

    async def container_changes(self, key: str) -> Sequence[Change]:
        container = await self.container(key)
        return await self.layer_changes(container.layer)


def big_data_file_name(key: str) -> str:
    """containers/storage's file name for a big-data key: the key itself when it is
    made of ``[0-9a-z.]`` only, else ``=`` and its base64."""
    if key and all(c == "." or c.isdigit() or ("a" <= c <= "z") for c in key):
        return key
    return "=" + base64.b64encode(key.encode()).decode()


def _config_created(config: bytes) -> str | None:
    try:
        value = json.loads(config).get("created")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and parse_time(value) else None
