"""``kpod push``: copy an image from the store to a registry or a file, optionally signing it."""

from __future__ import annotations

import argparse
from typing import Any

from crio.errors import NotFoundError
from crio.image.local import find_image
from crio.image.reference import normalize, parse
from crio.kpod.common import Context
from crio.kpod.transfer import add_auth_flags, copy_between, credentials, printer, settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "push", help="push an image to a registry, oci:, oci-archive: or docker-archive:"
    )
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument(
        "destination",
        nargs="?",
        metavar="DESTINATION",
        help="TRANSPORT:REF (default docker://IMAGE)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("--sign-by", metavar="KEY", default="", help="sign with this GPG key")
    parser.add_argument("--remove-signatures", action="store_true", help="do not copy signatures")
    parser.add_argument("--digestfile", help="write the pushed manifest's digest to this file")
    add_auth_flags(parser)
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    conf = settings(ctx, args)
    store = await ctx.store()
    image = await find_image(store, args.image, conf.registries)
    if image is None:
        raise NotFoundError(f"image {args.image} is not in the store")
    destination = args.destination or f"docker://{args.image}"
    identity = None
    if destination.startswith("docker://"):
        ref = normalize(parse(destination.removeprefix("docker://")))
        identity = ref if ref.tag or ref.digest else ref.with_tag("latest")
    show = printer(args.quiet)
    if show is not None:
        show.message("Getting image source signatures")
    result = await copy_between(
        ctx,
        conf,
        f"containers-storage:@{image.id}",
        destination,
        creds=credentials(args),
        progress=show,
        sign_by=args.sign_by,
        sign_identity=identity,
        remove_signatures=args.remove_signatures,
        cert_dir=args.cert_dir or "",
    )
    if show is not None:
        show.message("Writing manifest to image destination")
        if args.sign_by:
            show.message("Storing signatures")
    if args.digestfile:
        with open(args.digestfile, "w") as f:
            f.write(result.manifest_digest)
    return 0
