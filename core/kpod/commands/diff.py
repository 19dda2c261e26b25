"""``kpod diff``: what a container (or an image's top layer) changed: A/C/D lines."""

from __future__ import annotations

import argparse
import json
from typing import Any

from crio.errors import NotFoundError
from crio.kpod.common import Context
from crio.kpod.imageview import resolve_image


def register(sub: Any) -> None:
    parser = sub.add_parser("diff", help="show changed files of a container or image")
    parser.add_argument("name", metavar="CONTAINER|IMAGE")
    parser.add_argument("--format", choices=("json",), help="json")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    store = await ctx.store()
    try:
        layer = (await store.container(args.name)).layer
    except NotFoundError:
        try:
            layer = (await resolve_image(store, args.name))[0].top_layer
        except NotFoundError:
            raise NotFoundError(f"No such container or image: {args.name}") from None
    changes = await store.layer_changes(layer)
    if args.format == "json":
        groups: dict[str, list[str]] = {"added": [], "changed": [], "deleted": []}
        key = {"A": "added", "C": "changed", "D": "deleted"}
        for change in changes:
            groups[key[change.kind.value]].append(change.path)
        print(json.dumps({k: v for k, v in groups.items() if v}, indent=4))
        return 0
    for change in changes:
        print(f"{change.kind.value} {change.path}")
    return 0
