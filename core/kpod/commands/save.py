"""``kpod save``: write an image from the store as a docker-archive or oci-archive file."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Any

from crio.errors import NotFoundError
from crio.image.local import find_image
from crio.kpod.common import Context, refuse_tty_output
from crio.kpod.transfer import copy_between, printer, settings


def register(sub: Any) -> None:
    parser = sub.add_parser("save", help="save an image to an archive (stdout by default)")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("-o", "--output", help="the file to write")
    parser.add_argument(
        "--format", default="docker-archive", choices=("docker-archive", "oci-archive")
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    conf = settings(ctx, args)
    store = await ctx.store()
    image = await find_image(store, args.image, conf.registries)
    if image is None:
        raise NotFoundError(f"image {args.image} is not in the store")
    name = next((n for n in image.names if "@" not in n and args.image in n), "")
    name = name or next((n for n in image.names if "@" not in n), "")
    if args.output is None:
        refuse_tty_output("an image archive")
    target = args.output or tempfile.mkstemp(prefix="kpod-save-", dir=conf.tmp_dir or None)[1]
    try:
        if args.format == "docker-archive":
            ref = f"{target}:{name}" if name else target
        else:
            tag = name.rpartition(":")[2] if name else ""
            ref = f"{target}:{tag}" if tag else target
        await copy_between(
            ctx,
            conf,
            f"containers-storage:@{image.id}",
            f"{args.format}:{ref}",
            progress=printer(args.quiet),
        )
        if args.output is None:
            with open(target, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.flush()
    finally:
        if args.output is None:
            os.unlink(target)
    return 0
