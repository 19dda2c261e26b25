"""``kpod mount`` / ``kpod umount``: a container's (or image's) root file system.

Mounts are reference-counted across processes: each ``mount`` needs one
``umount`` (or ``umount --force``), and crio's own mounts are counted too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from crio.errors import NotFoundError
from crio.kpod.common import Context, print_rows
from crio.kpod.imageview import resolve_image
from crio.storage import Store


def register(sub: Any) -> None:
    mount = sub.add_parser("mount", help="mount a container's (or image's) root file system")
    mount.add_argument("names", nargs="*", metavar="CONTAINER|IMAGE")
    mount.add_argument("--format", help="json, or a template such as '{{.ID}}'")
    mount.set_defaults(func=run_mount)
    umount = sub.add_parser("umount", aliases=["unmount"], help="unmount a root file system")
    umount.add_argument("names", nargs="*", metavar="CONTAINER|IMAGE")
    umount.add_argument("-a", "--all", action="store_true", help="every mounted container")
    umount.add_argument(
        "-f", "--force", action="store_true", help="drop every reference, not just one"
    )
    umount.set_defaults(func=run_umount)


async def _target(store: Store, name: str) -> tuple[str, str]:
    """("container" | "image", id)."""
    try:
        return "container", (await store.container(name)).id
    except NotFoundError:
        pass
    try:
        return "image", (await resolve_image(store, name))[0].id
    except NotFoundError:
        raise NotFoundError(f"No such container or image: {name}") from None


async def run_mount(args: argparse.Namespace, ctx: Context) -> int:
    store = await ctx.store()
    if not args.names:
        rows = []
        for container in await store.containers():
            if await store.mount_count(container.layer):
                path = (await store.driver.metadata(container.layer)).get("MergedDir", "")
                if not path:
                    path = str(await store.driver.layer_dir(container.layer) or "")
                rows.append({"ID": container.id[:12], "Mountpoint": path})
        print_rows(
            rows, [("ID", "ID"), ("MOUNTPOINT", "Mountpoint")], fmt=args.format, heading=False
        )
        return 0
    for name in args.names:
        kind, ident = await _target(store, name)
        path: Path = await (
            store.mount_container(ident) if kind == "container" else store.mount_image(ident)
        )
        print(path)
    return 0


async def run_umount(args: argparse.Namespace, ctx: Context) -> int:
    store = await ctx.store()
    names = list(args.names)
    if args.all:
        names += [c.id for c in await store.containers() if await store.mount_count(c.layer)]
    for name in names:
        kind, ident = await _target(store, name)
        if kind == "container":
            await store.unmount_container(ident, force=args.force)
        else:
            await store.unmount_image(ident, force=args.force)
        print(ident)
    return 0
