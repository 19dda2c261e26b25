"""What kpod's pull, push, load and save share: flags, settings, a copy between two references."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from crio.errors import InvalidRequestError
from crio.image.auth import Credentials, default_auth_files, parse_creds
from crio.image.copy import CopyOptions, CopyResult, ProgressFn, copy_image
from crio.image.pull import ImageSettings, split_transport
from crio.image.reference import Reference
from crio.kpod.common import Context, UsageError
from crio.kpod.output import is_terminal
from crio.kpod.progress import ProgressPrinter

__all__ = [
    "add_auth_flags",
    "copy_between",
    "credentials",
    "printer",
    "settings",
]


def add_auth_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--creds", metavar="USER[:PASSWORD]", help="registry credentials")
    parser.add_argument("--authfile", help="auth.json to read credentials from")
    parser.add_argument(
        "--tls-verify",
        default="true",
        choices=("true", "false"),
        help="verify TLS certificates; false also allows plain HTTP",
        type=lambda v: v.lower(),
    )
    parser.add_argument("--cert-dir", help="certificates per registry (DIR/HOST/*.crt)")


def credentials(args: argparse.Namespace) -> Credentials | None:
    return parse_creds(args.creds) if getattr(args, "creds", None) else None


def settings(ctx: Context, args: argparse.Namespace) -> ImageSettings:
    """crio.toml's ``[crio.image]`` with kpod's flags applied."""
    config = ctx.config()
    overrides: dict[str, Any] = {}
    if getattr(args, "signature_policy", None):
        overrides["signature_policy"] = args.signature_policy
    if getattr(args, "tls_verify", "true") == "false":
        overrides["tls_verify"] = False
    if getattr(args, "authfile", None):
        overrides["auth_files"] = (args.authfile,)
    else:
        files = list(default_auth_files())
        if config.crio.image.global_auth_file:
            files.append(config.crio.image.global_auth_file)
        overrides["auth_files"] = tuple(files)
    return ImageSettings.from_config(config, **overrides)


def printer(quiet: bool) -> ProgressPrinter | None:
    """Progress bars on stdout when it is a terminal; otherwise plain lines on stderr."""
    if quiet:
        return None
    if is_terminal(sys.stdout):
        return ProgressPrinter(sys.stdout, True)
    return ProgressPrinter(sys.stderr, False)


async def copy_between(
    ctx: Context,
    conf: ImageSettings,
    source: str,
    destination: str,
    *,
    creds: Credentials | None = None,
    progress: ProgressFn | None = None,
    sign_by: str = "",
    sign_identity: Reference | None = None,
    remove_signatures: bool = False,
    cert_dir: str = "",
) -> CopyResult:
    """Copy ``source`` to ``destination`` (both ``transport:reference``)."""
    found = ctx.plugins()
    store = await ctx.store()
    context = conf.context(creds, store)
    if cert_dir:
        context = dataclasses.replace(context, certs_dir=cert_dir)
    src_transport, _, src_ref = split_transport(found, source, conf.default_transport)
    dst_transport, dst_name, dst_ref = split_transport(found, destination, conf.default_transport)
    if dst_name == "docker" and not dst_ref.startswith("//") and destination.startswith("docker:"):
        raise UsageError(f"invalid destination {destination!r}: expected docker://NAME")
    src = await src_transport.open_source(src_ref, context)
    try:
        dst = await dst_transport.open_destination(dst_ref, context)
        try:
            options = CopyOptions(
                platform=conf.platform,
                max_parallel=conf.max_parallel,
                sign_by=sign_by,
                sign_identity=sign_identity,
                remove_signatures=remove_signatures,
                progress=progress,
            )
            return await copy_image(src, dst, options)
        finally:
            await dst.close()
    finally:
        await src.close()


def one_of(values: Sequence[str], value: str, flag: str) -> str:
    if value not in values:
        raise InvalidRequestError(f"{flag}: {value!r} is not one of {', '.join(values)}")
    return value
