"""Images built by tests from busybox-static, in the shapes registries serve.

Everything is written as an OCI layout by plain code here (not by crio's
own writer), so a bug in crio cannot hide in its test data. Shapes:

* ``oci``: OCI manifest, gzip layers,
* ``zstd``: OCI manifest, zstd layers,
* ``plain``: OCI manifest, uncompressed layers,
* ``index``: OCI index with a linux/amd64 and a linux/arm64/v8 image.

Docker schema 2 and signed schema 1 are made from ``oci`` by ``skopeo copy
--format v2s2|v2s1`` on the way into the registry (an OCI layout's index.json
may only point at OCI types).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

__all__ = ["BUSYBOX", "BuiltImage", "build_layout", "layer_tar"]

BUSYBOX = Path("/bin/busybox")
_MTIME = 1700000000


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes | str], dirs: tuple[str, ...] = ()) -> bytes:
    """A layer tar: ``files`` maps path to content (bytes) or symlink target (str)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _MTIME
            tar.addfile(info)
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.mtime = _MTIME
            if isinstance(content, str):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content, 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def busybox_layers(extra: bytes = b"") -> list[bytes]:
    """Two layers: busybox with a few applets, then /etc files (``extra`` varies the digest)."""
    binary = BUSYBOX.read_bytes()
    base = layer_tar(
        {"bin/busybox": binary, "bin/sh": "busybox", "bin/ls": "busybox", "bin/cat": "busybox"},
        dirs=("bin", "etc", "tmp"),
    )
    top = layer_tar(
        {
            "etc/hello": b"hello from crio tests\n" + extra,
            "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
        }
    )
    return [base, top]


def _compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


_LAYER_TYPE = {
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


@dataclass
class BuiltImage:
    """What a layout holds, for assertions."""

    path: Path
    ref: str
    manifest_digest: str  # the top-level one (the index for ``index``)
    config_digest: str
    diff_ids: list[str]
    layer_digests: list[str]
    instances: dict[str, str] = field(default_factory=dict)  # arch -> manifest digest

    @property
    def source(self) -> str:
        return f"oci:{self.path}:{self.ref}"


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def blob(self, data: bytes) -> str:
        digest = _digest(data)
        (self.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return digest

    def image(self, kind: str, compression: str, arch: str, variant: str, extra: bytes, user: str):
        layers = busybox_layers(extra)
        diff_ids = [_digest(layer) for layer in layers]
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "User": user, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "crio test"}, {"created_by": "crio test /etc"}],
        }
        if variant:
            config["variant"] = variant
        config_bytes = json.dumps(config).encode()
        config_digest = self.blob(config_bytes)
        layer_descs, layer_digests = [], []
        for layer in layers:
            blob = _compress(layer, compression)
            digest = self.blob(blob)
            layer_digests.append(digest)
            layer_descs.append(
                {"mediaType": _LAYER_TYPE[(kind, compression)], "digest": digest, "size": len(blob)}
            )
        media = (
            "application/vnd.oci.image.manifest.v1+json"
            if kind == "oci"
            else "application/vnd.docker.distribution.manifest.v2+json"
        )
        config_type = (
            "application/vnd.oci.image.config.v1+json"
            if kind == "oci"
            else "application/vnd.docker.container.image.v1+json"
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": media,
            "config": {
                "mediaType": config_type,
                "digest": config_digest,
                "size": len(config_bytes),
            },
            "layers": layer_descs,
        }
        data = json.dumps(manifest, indent=2).encode()
        return media, self.blob(data), len(data), config_digest, diff_ids, layer_digests

    def index(self, entries: list[dict[str, object]], ref: str) -> None:
        (self.root / "index.json").write_text(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [
                        {**e, "annotations": {"org.opencontainers.image.ref.name": ref}}
                        for e in entries
                    ],
                }
            )
        )


def build_layout(
    root: Path, shape: str, ref: str = "latest", extra: bytes = b"", user: str = "1000"
) -> BuiltImage:
    """Write one image of ``shape`` into the OCI layout ``root`` (created)."""
    writer = _Writer(root)
    kind, compression = {
        "oci": ("oci", "gzip"),
        "zstd": ("oci", "zstd"),
        "plain": ("oci", "none"),
        "index": ("oci", "gzip"),
    }[shape]
    host_arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64")
    if shape != "index":
        media, digest, size, config, diff_ids, layers = writer.image(
            kind, compression, host_arch, "", extra, user
        )
        writer.index([{"mediaType": media, "digest": digest, "size": size}], ref)
        return BuiltImage(root, ref, digest, config, diff_ids, layers, {host_arch: digest})
    entries, instances, chosen = [], {}, None
    for arch, variant in (("amd64", ""), ("arm64", "v8")):
        media, digest, size, config, diff_ids, layers = writer.image(
            kind, compression, arch, variant, extra + arch.encode(), user
        )
        platform = {
            "architecture": arch,
            "os": "linux",
            **({"variant": variant} if variant else {}),
        }
        entries.append({"mediaType": media, "digest": digest, "size": size, "platform": platform})
        instances[arch] = digest
        if arch == host_arch:
            chosen = (config, diff_ids, layers)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }
    index_bytes = json.dumps(index, indent=2).encode()
    index_digest = writer.blob(index_bytes)
    writer.index(
        [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": index_digest,
                "size": len(index_bytes),
            }
        ],
        ref,
    )
    assert chosen is not None
    return BuiltImage(root, ref, index_digest, chosen[0], chosen[1], chosen[2], instances)
