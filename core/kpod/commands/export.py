"""``kpod export``: a container's file system as a tar archive."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import IO, Any

from crio.kpod.common import Context, refuse_tty_output
from crio.storage import tar_directory


def register(sub: Any) -> None:
    parser = sub.add_parser("export", help="export a container's file system as a tar archive")
    parser.add_argument("container", metavar="CONTAINER")
    parser.add_argument("-o", "--output", help="write to a file instead of stdout")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    if not args.output:
        refuse_tty_output("a tar archive")
    store = await ctx.store()
    container = await store.container(args.container)
    root = await store.mount_container(container.id)
    try:
        out: IO[bytes] = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
        try:
            chunks = tar_directory(root)
            while True:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    break
                await asyncio.to_thread(out.write, chunk)
            out.flush()
        finally:
            if args.output:
                out.close()
    finally:
        await store.unmount_container(container.id)
    return 0
