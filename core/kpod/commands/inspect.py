"""``kpod inspect``: low-level information on images (and containers) as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from crio.errors import NotFoundError
from crio.kpod.common import Context, render
from crio.kpod.imageview import inspect_image, resolve_image
from crio.storage import Store


def register(sub: Any) -> None:
    parser = sub.add_parser("inspect", help="show images or containers as JSON")
    parser.add_argument("names", nargs="+", metavar="NAME")
    parser.add_argument("-f", "--format", help="template such as '{{.Id}}'")
    parser.add_argument("--type", choices=("image", "container", "all"), default="all")
    parser.set_defaults(func=run)


async def _container(store: Store, key: str) -> dict[str, Any]:
    container = await store.container(key)
    layer = await store.layer(container.layer)
    return {
        "Id": container.id,
        "Names": list(container.names),
        "Image": "sha256:" + container.image if container.image else "",
        "Created": container.created,
        "Metadata": container.metadata,
        "GraphDriver": {
            "Name": store.driver.name,
            "Data": dict(await store.driver.metadata(layer.id)),
        },
        "Layer": layer.id,
    }


async def run(args: argparse.Namespace, ctx: Context) -> int:
    store = await ctx.store()
    found = []
    for name in args.names:
        if args.type in ("image", "all"):
            try:
                image, _ = await resolve_image(store, name)
                found.append(await inspect_image(store, image))
                continue
            except NotFoundError:
                if args.type == "image":
                    raise
        try:
            found.append(await _container(store, name))
        except NotFoundError:
            raise NotFoundError(f"No such object: {name}") from None
    if args.format:
        for item in found:
            print(render(args.format, item))
    else:
        print(json.dumps(found, indent=4))
    return 0
