"""``kpod inspect``: low-level information on containers, pods and images as JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Any

TYPES = ("container", "pod", "image", "all")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "inspect",
        help="show containers, pods or images as JSON",
        description="Show what crio and the store know of each named container, pod sandbox "
        "or image, as a JSON array (Docker's field names), or through --format.",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="container, pod or image")
    parser.add_argument("-f", "--format", help="json, or a Go template such as '{{.Id}}'")
    parser.add_argument(
        "-t", "--type", choices=TYPES, default="all", help="what NAME names (default: any)"
    )
    parser.set_defaults(func=run)


async def _store_container(ctx: Any, key: str) -> dict[str, Any]:
    """A store container crio does not record (made by kpod or another tool)."""
    store = await ctx.store()
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


async def _one(ctx: Any, name: str, kind: str) -> dict[str, Any]:
    from crio.errors import NotFoundError
    from crio.kpod.containerview import inspect_container, inspect_pod
    from crio.kpod.imageview import inspect_image, resolve_image

    node = ctx.node()
    if kind in ("container", "all"):
        try:
            return await inspect_container(node, await node.container(name))
        except NotFoundError:
            pass
    if kind in ("pod", "all"):
        try:
            return await inspect_pod(node, await node.pod(name))
        except NotFoundError:
            pass
    if kind in ("image", "all"):
        try:
            image, _ = await resolve_image(await ctx.store(), name)
            return await inspect_image(await ctx.store(), image)
        except NotFoundError:
            pass
    if kind in ("container", "all"):
        try:
            return await _store_container(ctx, name)
        except NotFoundError:
            pass
    what = {"all": "object"}.get(kind, kind)
    raise NotFoundError(f"No such {what}: {name}")


async def run(args: argparse.Namespace, ctx: Any) -> int:
    from crio.errors import CrioError
    from crio.kpod.output import compile_template, print_objects

    if args.format and args.format != "json":
        compile_template(args.format)  # a bad template is kpod's failure (125), before any I/O
    found, failed = [], 0
    for name in args.names:
        try:
            found.append(await _one(ctx, name, args.type))
        except CrioError as exc:
            print(f"kpod: {exc}", file=sys.stderr)
            failed = 1
    if found or not args.format:
        print_objects(found, args.format)
    return failed
