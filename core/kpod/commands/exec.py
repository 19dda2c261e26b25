"""``kpod exec``: run a command in a running container; exit with its code."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "exec",
        help="run a command in a running container",
        description="Run COMMAND in the container with its own process settings (user, "
        "environment, working directory) unless changed by the options, and exit with "
        "COMMAND's exit code.",
    )
    parser.add_argument(
        "-i", "--interactive", action="store_true", help="pass stdin to the command"
    )
    parser.add_argument("-t", "--tty", action="store_true", help="run it on a terminal")
    parser.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="set a variable"
    )
    parser.add_argument("-u", "--user", metavar="USER[:GROUP]", help="run as this user")
    parser.add_argument("-w", "--workdir", metavar="DIR", help="working directory")
    parser.add_argument("container", metavar="CONTAINER")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    parser.set_defaults(func=run)


def _env(base: list[str], extra: list[str]) -> list[str]:
    from crio.kpod.common import UsageError

    merged = {item.partition("=")[0]: item for item in base}
    for item in extra:
        key, eq, _ = item.partition("=")
        if not key:
            raise UsageError(f"--env {item!r}: expected KEY=VALUE")
        if not eq:  # docker exec -e KEY: take the value from kpod's environment
            import os

            if key not in os.environ:
                continue
            item = f"{key}={os.environ[key]}"
        merged[key] = item
    return list(merged.values())


def _process(ctr: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The changes to the container's OCI process the options ask for."""
    import json
    from pathlib import Path

    from crio.errors import InvalidRequestError
    from crio.kpod.common import UsageError
    from crio.oci.container import SecurityContext
    from crio.oci.user import resolve_user

    changes: dict[str, Any] = {}
    spec = json.loads(Path(ctr.bundle, "config.json").read_bytes())
    if args.env:
        changes["env"] = _env(list((spec.get("process") or {}).get("env") or []), args.env)
    if args.user:
        try:
            user = resolve_user(Path(ctr.rootfs), args.user, SecurityContext())
        except InvalidRequestError as exc:
            detail = str(exc).replace("image config User: ", "")
            raise UsageError(f"--user {args.user!r}: {detail}") from None
        changes["user"] = {
            "uid": user.uid,
            "gid": user.gid,
            "additionalGids": list(user.additional_gids),
        }
    if args.workdir:
        if not args.workdir.startswith("/"):
            raise UsageError(f"--workdir {args.workdir!r}: must be an absolute path")
        changes["cwd"] = args.workdir
    return changes


async def run(args: argparse.Namespace, ctx: Any) -> int:
    import sys

    from crio.kpod.common import UsageError
    from crio.kpod.localio import LocalIO, raw_terminal

    if not args.command:
        raise UsageError("exec: no command given")
    if args.tty and not sys.stdout.isatty():
        raise UsageError("exec -t: stdout is not a terminal")
    node = ctx.node()
    ctr = await node.container(args.container)
    control = await node.control(ctr)
    process = _process(ctr, args)
    io = LocalIO(interactive=args.interactive, tty_mode=args.tty)
    with raw_terminal(args.tty and args.interactive):
        return await control.exec_process(ctr.container_id, args.command, io, process)
