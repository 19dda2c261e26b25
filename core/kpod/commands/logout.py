"""``kpod logout``: forget a registry's credentials (or all of them)."""

from __future__ import annotations

import argparse
from typing import Any

from crio.errors import NotFoundError
from crio.image.auth import remove_credentials
from crio.kpod.commands.login import auth_file, key_of
from crio.kpod.common import Context, UsageError


def register(sub: Any) -> None:
    parser = sub.add_parser("logout", help="log out of a registry")
    parser.add_argument("registry", nargs="?", metavar="REGISTRY")
    parser.add_argument("-a", "--all", action="store_true", help="forget every registry")
    parser.add_argument("--authfile", help="auth.json to change")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    if not args.all and not args.registry:
        raise UsageError("logout: name a registry or give --all")
    path = auth_file(args)
    removed = remove_credentials(path, None if args.all else key_of(args.registry))
    if args.all:
        print("Removed login credentials for all registries")
        return 0
    if not removed:
        raise NotFoundError(f"not logged in to {key_of(args.registry)}")
    print(f"Removed login credentials for {key_of(args.registry)}")
    return 0
