"""``kpod images``: list images (Docker's ``docker images``)."""

from __future__ import annotations

import argparse
import fnmatch
from typing import Any

from crio.kpod.common import Context, UsageError, parse_filters, print_rows
from crio.kpod.imageview import image_config, image_rows, resolve_image, split_name
from crio.storage import Image, Store
from crio.storage.records import parse_time

FILTERS = ("dangling", "label", "before", "since", "reference")


def register(sub: Any) -> None:
    parser = sub.add_parser("images", help="list images")
    parser.add_argument("reference", nargs="?", help="only images matching REPOSITORY[:TAG]")
    parser.add_argument("-a", "--all", action="store_true", help="all images (the default)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    parser.add_argument("--digests", action="store_true", help="show digests")
    parser.add_argument("--no-trunc", action="store_true", help="full image ids")
    parser.add_argument("-n", "--noheading", action="store_true", help="no header line")
    parser.add_argument("--format", help="json, or a template such as '{{.ID}}\\t{{.Tag}}'")
    parser.add_argument(
        "-f", "--filter", action="append", default=[], help=f"filter ({', '.join(FILTERS)})"
    )
    parser.set_defaults(func=run)


async def _keep(store: Store, images: list[Image], filters: list[tuple[str, str]]) -> list[Image]:
    for key, value in filters:
        if key == "dangling":
            if value not in ("true", "false"):
                raise UsageError(f"invalid filter 'dangling={value}': use true or false")
            want = value == "true"
            images = [i for i in images if (not i.names) == want]
        elif key == "label":
            name, eq, expected = value.partition("=")
            kept = []
            for image in images:
                labels = (image_config(await store.image_config(image.id)).get("config") or {}).get(
                    "Labels"
                ) or {}
                if name in labels and (not eq or labels[name] == expected):
                    kept.append(image)
            images = kept
        elif key in ("before", "since"):
            pivot = parse_time((await resolve_image(store, value))[0].created)
            images = [
                i
                for i in images
                if (
                    parse_time(i.created) < pivot
                    if key == "before"
                    else parse_time(i.created) > pivot
                )
            ]
        elif key == "reference":
            images = [i for i in images if _matches(i, value)]
    return images


def _matches(image: Image, pattern: str) -> bool:
    for name in image.names:
        repo, tag, _ = split_name(name)
        short = repo.split("/", 1)[1] if "/" in repo else repo
        for candidate in (name, repo, f"{short}:{tag}", short):
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
    return False


async def run(args: argparse.Namespace, ctx: Context) -> int:
    filters = parse_filters(args.filter, FILTERS)
    if args.reference:
        filters.append(("reference", args.reference))
    store = await ctx.store()
    images = await _keep(store, await store.images(), filters)
    images.sort(key=lambda i: parse_time(i.created), reverse=True)
    shared = {}
    for image in images if store.image_stores else ():
        where = await store.image_store_of(image.id)
        if where != store.root:
            shared[image.id] = str(where)
    rows = image_rows(images, await store.layers(), no_trunc=args.no_trunc, stores=shared)
    if args.quiet:
        seen: list[str] = []
        for row in rows:
            if row["ID"] not in seen:
                seen.append(row["ID"])
        for image_id in seen:
            print(image_id)
        return 0
    columns = [("REPOSITORY", "Repository"), ("TAG", "Tag")]
    if args.digests:
        columns.append(("DIGEST", "Digest"))
    columns += [("IMAGE ID", "ID"), ("CREATED", "CreatedSince"), ("SIZE", "Size")]
    if store.image_stores:  # which store an image lives in: "local" or a read-only one
        columns.append(("STORE", "Store"))
    print_rows(rows, columns, fmt=args.format, heading=not args.noheading)
    return 0
