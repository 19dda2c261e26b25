"""``kpod pull``: pull an image into the store, with progress."""

from __future__ import annotations

import argparse
from typing import Any

from crio.image.reference import Reference
from crio.image.transport import ImageDestination
from crio.kpod.common import Context
from crio.kpod.transfer import add_auth_flags, credentials, printer, settings


def register(sub: Any) -> None:
    parser = sub.add_parser("pull", help="pull an image from a registry or an archive")
    parser.add_argument("image", metavar="IMAGE", help="NAME[:TAG|@DIGEST] or TRANSPORT:REF")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    parser.add_argument("--signature-policy", help="policy.json to use instead of crio's")
    add_auth_flags(parser)
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    conf = settings(ctx, args)
    store = await ctx.store()
    found = ctx.plugins()
    storage = found.image_transport("containers-storage")
    assert storage is not None
    show = printer(args.quiet)

    async def destination(ref: Reference | None, reference: str) -> ImageDestination:
        if show is not None:
            show.message(f"Trying to pull {reference}...")
            show.message("Getting image source signatures")
        return await storage.open_destination(str(ref) if ref else "", conf.context(store=store))

    from crio.image.pull import Puller

    result = await Puller().pull(
        found,
        args.image,
        conf,
        destination,
        credentials=credentials(args),
        store=store,
        progress=show,
    )
    if show is not None:
        show.message("Writing manifest to image destination")
    print(result.image_id)
    return 0
