"""``kpod history``: an image's history from its config, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from crio.kpod.common import Context, human_ago, human_size, print_rows
from crio.kpod.imageview import image_config, resolve_image
from crio.storage.records import parse_time


def register(sub: Any) -> None:
    parser = sub.add_parser("history", help="show an image's history")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    parser.add_argument("-H", "--human", default="true", choices=("true", "false"))
    parser.add_argument("--format", help="json, or a template such as '{{.CreatedBy}}'")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    store = await ctx.store()
    image, _ = await resolve_image(store, args.image)
    config = image_config(await store.image_config(image.id))
    layers = await store.image_layers(image.id)
    history = config.get("history") or [{} for _ in layers]
    rows: list[dict[str, Any]] = []
    index = 0
    for entry in history:
        size = 0
        if not entry.get("empty_layer") and index < len(layers):
            size = layers[index].diff_size
            index += 1
        created_by = entry.get("created_by", "")
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        created = parse_time(entry.get("created", ""))
        rows.append(
            {
                "ID": "<missing>",
                "Created": human_ago(created) if args.human == "true" else entry.get("created", ""),
                "CreatedBy": created_by,
                "Size": human_size(size) if args.human == "true" else str(size),
                "Comment": entry.get("comment", ""),
            }
        )
    rows.reverse()
    if rows:
        rows[0]["ID"] = ("sha256:" + image.id) if args.no_trunc else image.id[:12]
    if args.quiet:
        for row in rows:
            print(row["ID"])
        return 0
    columns = [
        ("IMAGE", "ID"),
        ("CREATED", "Created"),
        ("CREATED BY", "CreatedBy"),
        ("SIZE", "Size"),
        ("COMMENT", "Comment"),
    ]
    print_rows(rows, columns, fmt=args.format)
    return 0
