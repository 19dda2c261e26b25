"""``kpod cp``: copy files between a container and the host, or a tar stream (``-``).

Paths inside the container are resolved inside its root file system, by
file descriptor (:mod:`crio.kpod.rootfs`): no symbolic link of the image
leads out of it. The root is reached through the store's mount, counted as
crio's own: a running container's is already there, a stopped one's is
mounted for the copy and unmounted after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "cp",
        help="copy files between a container and the host",
        description="Copy SRC to DEST, one of them CONTAINER:PATH. A directory is copied whole; "
        "SRC ending in /. copies what the directory holds. '-' as SRC reads a tar archive from "
        "stdin and unpacks it into the container's DEST directory; '-' as DEST writes SRC as a "
        "tar archive to stdout. Mode, owner and times are kept. Works on created, running and "
        "stopped containers.",
    )
    parser.add_argument("source", metavar="SRC", help="CONTAINER:PATH, a host path, or -")
    parser.add_argument("destination", metavar="DEST", help="CONTAINER:PATH, a host path, or -")
    parser.add_argument(
        "-L",
        "--follow-link",
        action="store_true",
        help="copy what a symbolic link SRC points to, not the link",
    )
    parser.set_defaults(func=run)


def _split(arg: str) -> tuple[str | None, str]:
    """(container, path) for ``CONTAINER:PATH``; (None, path) for a host path or ``-``."""
    if arg == "-" or arg.startswith(("/", ".")):
        return None, arg
    name, colon, path = arg.partition(":")
    if not colon or not name:
        return None, arg
    return name, path or "/"


class _Side:
    """One end of the copy: a directory descriptor to resolve paths from, and a path."""

    def __init__(self, root: int, path: str, label: str) -> None:
        self.root, self.path, self.label = root, path, label

    def close(self) -> None:
        os.close(self.root)


def _host(path: str) -> _Side:
    from crio.kpod.rootfs import open_root

    absolute = os.path.abspath(path)
    return _Side(open_root("/"), absolute, absolute)


async def _read(side: _Side, out: Any, follow: bool) -> None:
    from crio.errors import NotFoundError
    from crio.kpod.rootfs import is_dir, resolve, write_tar

    found = resolve(side.root, side.path, follow=follow)
    try:
        if not found.exists:
            raise NotFoundError(f"{side.label}: no such file or directory")
        contents = side.path.endswith("/.") and is_dir(found)
        base = found.name or "/"
        write_tar(out, found.parent, found.name, base, contents=contents)
    finally:
        found.close()


def _target(side: _Side, source_name: str) -> tuple[str, str | None]:
    """(directory to unpack in, as a path under the side's root; new name of the top)."""
    from crio.errors import NotFoundError
    from crio.kpod.rootfs import is_dir, resolve

    found = resolve(side.root, side.path, follow=True)
    try:
        if found.exists and is_dir(found):
            return side.path, None
        if side.path.endswith("/"):
            raise NotFoundError(f"{side.label}: no such directory")
        # DEST is a new name (or a file to replace): unpack beside it under its name.
        return os.path.dirname(side.path.rstrip("/")) or "/", found.name or source_name
    finally:
        found.close()


async def _container_root(ctx: Any, name: str) -> tuple[str, str]:
    """(store container id, mounted root) for the container ``name``."""
    from crio.errors import NotFoundError

    node = ctx.node()
    try:
        ctr = await node.container(name)
        key = ctr.container_id
    except NotFoundError:
        key = name  # a store container crio does not record (made by another tool)
    store = await ctx.store()
    stored = await store.container(key)
    return stored.id, str(await store.mount_container(stored.id))


async def run(args: argparse.Namespace, ctx: Any) -> int:
    from crio.kpod.common import UsageError
    from crio.kpod.rootfs import open_root

    src_ctr, src_path = _split(args.source)
    dst_ctr, dst_path = _split(args.destination)
    if (src_ctr is None) == (dst_ctr is None):
        raise UsageError("cp: exactly one of SRC and DEST must be CONTAINER:PATH")
    if args.destination == "-" and sys.stdout.isatty():
        raise UsageError("cp: refusing to write a tar archive to a terminal")
    store = await ctx.store()
    ctr_id, root = await _container_root(ctx, src_ctr or dst_ctr or "")
    try:
        inside = _Side(
            open_root(root),
            "/" + (src_path if src_ctr else dst_path).lstrip("/"),
            f"{src_ctr or dst_ctr}:{src_path if src_ctr else dst_path}",
        )
        if src_ctr:
            source, target = inside, None if dst_path == "-" else _host(dst_path)
        else:
            source, target = None if src_path == "-" else _host(src_path), inside
        try:
            await _copy(source, target, args.follow_link)
        finally:
            for side in (source, target):
                if side is not None:
                    side.close()
    finally:
        await store.unmount_container(ctr_id)
    return 0


async def _copy(source: _Side | None, target: _Side | None, follow: bool) -> None:
    from crio.kpod.rootfs import extract_tar

    if target is None:  # to stdout
        assert source is not None
        await _read(source, sys.stdout.buffer, follow)
        sys.stdout.flush()
        return
    if source is None:  # a tar stream from stdin, into a directory
        directory, top = _target(target, "")
        if top is not None:
            from crio.errors import NotFoundError

            raise NotFoundError(f"{target.label}: no such directory")
        extract_tar(sys.stdin.buffer, target.root, directory)
        return
    with tempfile.TemporaryFile() as spool:
        await _read(source, spool, follow)
        spool.seek(0)
        name = os.path.basename(source.path.rstrip("/")) or "/"
        directory, top = _target(target, name)
        extract_tar(spool, target.root, directory, top=top)
