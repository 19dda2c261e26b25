"""Helpers of the image integration tests: settings, pulls into an OCI layout."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from crio.image import manifest as mf
from crio.image import registries
from crio.image.oci_layout import LayoutDestination
from crio.image.pull import ImageSettings, Puller, PullResult
from crio.image.reference import Reference
from crio.plugins import Plugins
from support.image_shapes import BuiltImage

__all__ = [
    "PASSWORD",
    "SHAPES",
    "USER",
    "Pushed",
    "host_instance",
    "layout_blobs",
    "pull_into_layout",
    "settings_for",
    "write_policy",
]

SHAPES = ("oci", "v2s2", "v2s1", "zstd", "index")
USER, PASSWORD = "crio", "s3cret-pass"


@dataclass
class Pushed:
    image: BuiltImage
    digest: str  # what the registry calls it
    repository: str


def write_policy(path: Path, doc: str = '{"default": [{"type": "insecureAcceptAnything"}]}') -> str:
    path.write_text(doc)
    return str(path)


def settings_for(tmp: Path, *insecure: str, **overrides: object) -> ImageSettings:
    policy = overrides.pop("signature_policy", None) or write_policy(tmp / "policy.json")
    conf = overrides.pop("registries", None) or registries.Registries(
        insecure_extra=tuple(insecure)
    )
    return ImageSettings(registries=conf, signature_policy=policy, **overrides)  # type: ignore[arg-type]


def layout_destination(root: Path) -> object:
    async def open_dest(ref: Reference | None, reference: str) -> LayoutDestination:
        return LayoutDestination(root, "pulled")

    return open_dest


def pull_into_layout(
    plugins: Plugins, image: str, settings: ImageSettings, root: Path, **kwargs: object
) -> PullResult:
    puller = Puller()
    return asyncio.run(puller.pull(plugins, image, settings, layout_destination(root), **kwargs))  # type: ignore[arg-type]


def layout_blobs(root: Path) -> set[str]:
    directory = root / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in directory.iterdir()} if directory.exists() else set()


def host_instance(pushed: Pushed) -> str:
    return pushed.image.instances[mf.host_platform().architecture]
