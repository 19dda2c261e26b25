"""``kpod load``: load images from a docker-archive or oci-archive (file or stdin)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from crio.errors import CrioError, InvalidRequestError
from crio.image.docker_archive import ArchiveSource
from crio.image.oci_layout import REF_NAME
from crio.image.reference import normalize, parse
from crio.kpod.common import Context
from crio.kpod.transfer import copy_between, printer, settings


def register(sub: Any) -> None:
    parser = sub.add_parser("load", help="load images from an archive (stdin by default)")
    parser.add_argument("-i", "--input", help="the archive to read")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.set_defaults(func=run)


def _kind(path: str) -> tuple[str, list[str]]:
    """("docker-archive", [ref per image]) or ("oci-archive", [ref per image])."""
    try:
        with tarfile.open(path, "r:*") as tar:
            names = {m.name.lstrip("./") for m in tar.getmembers()}
            if "manifest.json" in names:
                entries = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
                return "docker-archive", [f"@{i}" for i in range(len(entries))]
            if "index.json" in names:
                index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
                refs = []
                for i, entry in enumerate(index.get("manifests", [])):
                    refs.append((entry.get("annotations") or {}).get(REF_NAME) or f"@{i}")
                return "oci-archive", refs
    except (tarfile.TarError, ValueError, OSError) as exc:
        raise InvalidRequestError(f"{path} is not an image archive: {exc}") from None
    raise InvalidRequestError(f"{path} is neither a docker-archive nor an oci-archive")


def _docker_names(path: str, index: int) -> list[str]:
    source = ArchiveSource(Path(path), None, index, path)
    source._open()
    names = []
    for tag in source.repo_tags:
        try:
            names.append(str(normalize(parse(tag))))
        except CrioError:
            continue
    return names


async def run(args: argparse.Namespace, ctx: Context) -> int:
    conf = settings(ctx, args)
    path, temporary = args.input, ""
    if path is None:
        if sys.stdin.isatty():
            raise InvalidRequestError("load: no archive given (-i FILE or stdin)")
        fd, temporary = tempfile.mkstemp(prefix="kpod-load-", dir=conf.tmp_dir or None)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        path = temporary
    try:
        kind, refs = _kind(path)
        store = await ctx.store()
        show = printer(args.quiet)
        for ref in refs:
            names: list[str] = []
            if kind == "docker-archive":
                names = _docker_names(path, int(ref[1:]))
            elif not ref.startswith("@"):
                try:
                    parsed = parse(ref)
                    names = [str(normalize(parsed))] if parsed.qualified else []
                except CrioError:
                    names = []
            target = names[0] if names else ""
            result = await copy_between(
                ctx, conf, f"{kind}:{path}:{ref}", f"containers-storage:{target}", progress=show
            )
            for extra in names[1:]:
                await store.tag_image(result.committed, extra)
            print(f"Loaded image: {', '.join(names) or 'sha256:' + result.committed}")
    finally:
        if temporary:
            os.unlink(temporary)
    return 0
