"""Real test images built from Debian's busybox-static (``/bin/busybox``).

Everything is real: real tar archives, real gzip, real sha256 digests, an
OCI image layout that ``skopeo copy oci:DIR ...`` accepts, and an image
written straight into a store through :class:`crio.storage.Store`.

    busybox_rootfs_tar()                 uncompressed layer tar (cached)
    layer_tar({"etc/motd": b"hi\\n"})     any small layer
    image_config(diff_ids, cmd=[...])    an OCI image config (bytes)
    write_oci_layout(dir, [tar...], config=None, ref="latest")  -> OciImage
    put_busybox_image(root, runroot, name="localhost/busybox:latest")  -> image id
    await put_image(store, [tar...], name=...)                          -> Image
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUSYBOX",
    "BUSYBOX_APPLETS",
    "OciImage",
    "busybox_rootfs_tar",
    "digest",
    "gzip_bytes",
    "image_config",
    "layer_tar",
    "put_busybox_image",
    "put_image",
    "write_oci_layout",
]

BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = (
    "sh", "sleep", "echo", "cat", "ls", "true", "false", "env", "id", "mkdir", "rm",
    "touch", "ps", "date", "wc", "grep", "head", "tail", "test", "hostname", "printf",
    "pwd", "stat", "kill", "top", "uname", "whoami", "nc", "wget", "mount", "ln", "cp",
    "mv", "chmod", "chown", "sed", "seq", "sync", "tee", "yes", "readlink", "dd", "du",
)  # fmt: skip
_MTIME = 1_700_000_000

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    b"user1:x:1000:1000:Test User:/home/user1:/bin/sh\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = b"root:x:0:\ndaemon:x:1:\nuser1:x:1000:\nnogroup:x:65534:\n"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def gzip_bytes(data: bytes, level: int = 1) -> bytes:
    """gzip with mtime 0, so the same input always gives the same blob."""
    return gzip.compress(data, compresslevel=level, mtime=0)


def _info(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, _MTIME
    return info


def layer_tar(
    files: Mapping[str, bytes | str | None],
    dirs: Sequence[str] = (),
    modes: Mapping[str, int] | None = None,
) -> bytes:
    """A PAX layer tar: ``files`` maps a path to content (bytes), a symlink target
    (str starting with ``->``) or None (a whiteout ``.wh.`` name is just a path)."""
    out = io.BytesIO()
    modes = modes or {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in dirs:
            tar.addfile(_info(path, tarfile.DIRTYPE, modes.get(path, 0o755)))
        for path, content in files.items():
            if isinstance(content, str) and content.startswith("->"):
                info = _info(path, tarfile.SYMTYPE, 0o777)
                info.linkname = content[2:]
                tar.addfile(info)
            else:
                data = content.encode() if isinstance(content, str) else (content or b"")
                info = _info(path, tarfile.REGTYPE, modes.get(path, 0o644))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@functools.cache
def busybox_rootfs_tar() -> bytes:
    """A root file system layer: /bin/busybox, applet symlinks, /etc/passwd and group."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, mode in (
            ("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("home", 0o755),
            ("home/user1", 0o755), ("proc", 0o555), ("root", 0o700), ("sys", 0o555),
            ("tmp", 0o1777), ("usr", 0o755), ("var", 0o755),
        ):  # fmt: skip
            info = _info(path, tarfile.DIRTYPE, mode)
            if path == "home/user1":
                info.uid = info.gid = 1000
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = _info("bin/busybox", tarfile.REGTYPE, 0o755)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for applet in BUSYBOX_APPLETS:
            link = _info(f"bin/{applet}", tarfile.SYMTYPE, 0o777)
            link.linkname = "busybox"
            tar.addfile(link)
        for path, content in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            info = _info(path, tarfile.REGTYPE, 0o644)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def image_config(
    diff_ids: Sequence[str],
    cmd: Sequence[str] = ("/bin/sh",),
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    created: str = "2023-11-14T22:13:20Z",
    labels: Mapping[str, str] | None = None,
    **config: Any,
) -> bytes:
    """An OCI image config for layers with these diff ids."""
    body = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": list(env), "Cmd": list(cmd), "Labels": dict(labels or {}), **config},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [
            {"created": created, "created_by": f"crio test layer {i}"} for i in range(len(diff_ids))
        ],
    }
    return json.dumps(body, sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class OciImage:
    """What :func:`write_oci_layout` wrote."""

    path: Path
    ref: str
    manifest: bytes
    manifest_digest: str
    config: bytes
    config_digest: str
    layer_digests: tuple[str, ...]  # compressed blobs
    diff_ids: tuple[str, ...]

    @property
    def image_id(self) -> str:
        return self.config_digest.partition(":")[2]


def write_oci_layout(
    directory: Path,
    layers: Sequence[bytes],
    config: bytes | None = None,
    ref: str = "latest",
    compress: bool = True,
) -> OciImage:
    """An OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256``) of one image.

    :param layers: uncompressed layer tars, base first (gzipped unless ``compress`` is False).
    :param config: the config blob; default :func:`image_config` of the layers.
    """
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        d = digest(data)
        (blobs / d.partition(":")[2]).write_bytes(data)
        return d

    diff_ids = [digest(layer) for layer in layers]
    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    descriptors = []
    layer_digests = []
    for layer in layers:
        blob = gzip_bytes(layer) if compress else layer
        layer_digests.append(put(blob))
        descriptors.append({"mediaType": media, "digest": layer_digests[-1], "size": len(blob)})
    config = config if config is not None else image_config(diff_ids)
    config_digest = put(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    manifest_digest = put(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return OciImage(
        directory, ref, manifest, manifest_digest, config, config_digest,
        tuple(layer_digests), tuple(diff_ids),
    )  # fmt: skip


async def put_image(
    store: Any,
    layers: Sequence[bytes],
    name: str = "localhost/busybox:latest",
    config: bytes | None = None,
) -> Any:
    """Write an image (uncompressed layer tars, base first) into an open Store, as a pull would."""
    diff_ids = [digest(layer) for layer in layers]
    config = config if config is not None else image_config(diff_ids)
    parent = None
    descriptors = []
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        blob = gzip_bytes(layer)
        record = await store.put_layer(
            blob, parent=parent, diff_digest=diff_id, compressed_digest=digest(blob)
        )
        parent = record.id
        descriptors.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest(blob),
                "size": len(blob),
            }
        )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    return await store.create_image(
        config=config, top_layer=parent, manifest=manifest, names=[name] if name else []
    )


def put_busybox_image(
    store_root: Path | str,
    runroot: Path | str,
    name: str = "localhost/busybox:latest",
    driver: str = "",
) -> str:
    """Seed a store with the busybox image (before starting crio); returns the image id.

    Blocking: runs its own event loop.
    """
    from crio.storage import Store

    async def seed() -> str:
        store = await Store.open(Path(store_root), Path(runroot), driver)
        try:
            image = await put_image(store, [busybox_rootfs_tar()], name=name)
            return image.id
        finally:
            await store.close()

    return asyncio.run(seed())
