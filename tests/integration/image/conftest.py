"""Registries started for the image tests, images pushed into them by skopeo.

The shapes pushed (repository ``shapes/NAME:v1``) and what the tests check:
``oci`` (OCI manifest, gzip), ``v2s2`` (Docker schema 2), ``v2s1`` (signed
schema 1, made by skopeo), ``zstd`` (OCI, zstd layers), ``index`` (OCI index,
amd64 + arm64).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from crio.plugins import Plugins
from support.image_pull import PASSWORD, SHAPES, USER, Pushed
from support.image_shapes import build_layout
from support.registry import Registry, TokenServer, skopeo_push

for tool in ("docker-registry", "skopeo", "htpasswd"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed", allow_module_level=True)


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    found = Plugins()
    found.load_entry_points()
    return found


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def open_registry() -> Iterator[Registry]:
    registry = Registry()
    try:
        registry.start()
        yield registry
    finally:
        registry.cleanup()


@pytest.fixture(scope="session")
def shapes(open_registry: Registry, work: Path) -> dict[str, Pushed]:
    pushed = {}
    for shape in SHAPES:
        layout_shape = "oci" if shape.startswith("v2") else shape
        image = build_layout(work / f"shape-{shape}", layout_shape, extra=shape.encode())
        extra = (
            ["--all"]
            if shape == "index"
            else (["--format", shape] if shape.startswith("v2") else [])
        )
        digest = skopeo_push(image.source, open_registry, f"shapes/{shape}:v1", *extra)
        pushed[shape] = Pushed(image, digest, f"{open_registry.host}/shapes/{shape}")
    return pushed


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[Registry]:
    registry = Registry(htpasswd={USER: PASSWORD}, base=tmp_path / "basic-registry")
    try:
        registry.start()
        yield registry
    finally:
        registry.cleanup()


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[Registry, TokenServer]]:
    (tmp_path / "token").mkdir()
    server = TokenServer(tmp_path / "token", {USER: (PASSWORD, ("pull", "push"))}, anonymous=())
    server.start()
    registry = Registry(token=server, base=tmp_path / "token-registry")
    try:
        registry.start()
        yield registry, server
    finally:
        registry.cleanup()
        server.stop()
