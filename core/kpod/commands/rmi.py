"""``kpod rmi``: remove images; an image a container uses needs ``--force``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from crio.errors import CrioError, WrongStateError
from crio.kpod.common import Context
from crio.kpod.imageview import resolve_image


def register(sub: Any) -> None:
    parser = sub.add_parser("rmi", help="remove images")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument(
        "-f", "--force", action="store_true", help="also remove the containers using the image"
    )
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    store = await ctx.store()
    status = 0
    for ref in args.images:
        try:
            image, name = await resolve_image(store, ref)
            if name and len(image.names) > 1:
                await store.untag_image(image.id, name)
                print(f"Untagged: {name}")
                continue
            if not name and len(image.names) > 1 and not args.force:
                raise WrongStateError(
                    f"conflict: unable to delete {image.id[:12]} (must be forced) - "
                    "image is referenced in multiple repositories"
                )
            deleted = await store.delete_image(image.id, force=args.force)
        except CrioError as exc:
            print(f"kpod: {exc}", file=sys.stderr)
            status = 1
            continue
        for untagged in deleted.names:
            print(f"Untagged: {untagged}")
        print(f"Deleted: sha256:{deleted.image_id}")
    return status
