"""``kpod tag``: give an image another name."""

from __future__ import annotations

import argparse
from typing import Any

from crio.kpod.common import Context
from crio.kpod.imageview import normalize_name, resolve_image


def register(sub: Any) -> None:
    parser = sub.add_parser("tag", help="add a name to an image")
    parser.add_argument("source", metavar="SOURCE_IMAGE")
    parser.add_argument("targets", nargs="+", metavar="TARGET_IMAGE")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    names = [normalize_name(target) for target in args.targets]
    store = await ctx.store()
    image, _ = await resolve_image(store, args.source)
    for name in names:
        image = await store.tag_image(image.id, name)
    return 0
