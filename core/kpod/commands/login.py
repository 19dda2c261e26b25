"""``kpod login``: check credentials against a registry and keep them in auth.json."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
from typing import Any

from crio.errors import UnsupportedError
from crio.image.auth import Credentials, default_auth_files, lookup, store_credentials
from crio.kpod.common import Context, UsageError
from crio.kpod.transfer import settings


def register(sub: Any) -> None:
    parser = sub.add_parser("login", help="log in to a registry")
    parser.add_argument("registry", metavar="REGISTRY")
    parser.add_argument("-u", "--username")
    parser.add_argument("-p", "--password")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    parser.add_argument(
        "--authfile", help="auth.json to write (default $XDG_RUNTIME_DIR/containers/auth.json)"
    )
    parser.add_argument("--get-login", action="store_true", help="print the user logged in")
    parser.add_argument(
        "--tls-verify", default="true", choices=("true", "false"), type=lambda v: v.lower()
    )
    parser.set_defaults(func=run)


def auth_file(args: argparse.Namespace) -> str:
    return args.authfile or default_auth_files()[0]


def key_of(registry: str) -> str:
    key = registry.removeprefix("https://").removeprefix("http://").rstrip("/")
    return "docker.io" if key in ("index.docker.io", "registry-1.docker.io") else key


async def run(args: argparse.Namespace, ctx: Context) -> int:
    key = key_of(args.registry)
    path = auth_file(args)
    if args.get_login:
        found = lookup(key, [path])
        if found is None:
            raise UsageError(f"not logged in to {key}")
        print(found.username)
        return 0
    username = args.username
    if not username:
        if not sys.stdin.isatty():
            raise UsageError("login: --username is required without a terminal")
        username = input("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        raise UsageError("login: give --password or --password-stdin")
    creds = Credentials(username, password)
    conf = settings(ctx, args)
    docker = ctx.plugins().image_transport("docker")
    if docker is None or not hasattr(docker, "login"):
        raise UnsupportedError("login: no plugin provides a docker transport with login")
    context = dataclasses.replace(conf.context(creds), credentials=creds)
    await docker.login(key, context)
    store_credentials(path, key, creds)
    print("Login Succeeded!")
    return 0
