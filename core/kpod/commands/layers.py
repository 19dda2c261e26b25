"""``kpod layers`` and ``kpod applydiff``: the layer store itself, for debugging a node.

``applydiff`` applies a layer blob (plain, gzip or zstd tar; ``-`` for stdin)
on top of ``--parent`` and prints the new layer's id, as containers-storage's
tool of the same name does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from crio.kpod.common import Context, human_ago, human_size, print_rows
from crio.storage.records import parse_time


def register(sub: Any) -> None:
    layers = sub.add_parser("layers", help="list layers")
    layers.add_argument("--no-trunc", action="store_true", help="full ids")
    layers.add_argument("--format", help="json, or a template such as '{{.ID}}'")
    layers.set_defaults(func=run_layers)
    apply = sub.add_parser("applydiff", help="apply a layer blob to a new layer")
    apply.add_argument("file", metavar="FILE|-")
    apply.add_argument("--parent", help="the layer to apply on")
    apply.add_argument("--diff-digest", help="expected uncompressed digest (verified)")
    apply.set_defaults(func=run_applydiff)


async def run_layers(args: argparse.Namespace, ctx: Context) -> int:
    store = await ctx.store()
    rows = []
    for layer in await store.layers():
        cut = (lambda v: v) if args.no_trunc else (lambda v: v[:12])
        rows.append(
            {
                "ID": cut(layer.id),
                "Parent": cut(layer.parent) if layer.parent else "",
                "DiffDigest": layer.diff_digest,
                "Size": human_size(layer.diff_size),
                "Created": human_ago(parse_time(layer.created)),
                "Names": ",".join(layer.names),
            }
        )
    columns = [
        ("ID", "ID"),
        ("PARENT", "Parent"),
        ("DIFF DIGEST", "DiffDigest"),
        ("SIZE", "Size"),
        ("CREATED", "Created"),
        ("NAMES", "Names"),
    ]
    print_rows(rows, columns, fmt=args.format)
    return 0


async def run_applydiff(args: argparse.Namespace, ctx: Context) -> int:
    store = await ctx.store()
    parent = (await store.layer(args.parent)).id if args.parent else None
    if args.file == "-":
        # Unbuffered stdin: apply what arrives instead of waiting for whole buffers.
        blob: Any = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # noqa: SIM115
    else:
        blob = Path(args.file)
    layer = await store.put_layer(blob, parent=parent, diff_digest=args.diff_digest)
    print(layer.id)
    return 0
