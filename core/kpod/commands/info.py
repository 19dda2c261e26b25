"""``kpod info``: where the store is, which driver, its status and counts."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Mapping
from typing import Any

from crio import __version__
from crio.kpod.common import Context, render


def register(sub: Any) -> None:
    parser = sub.add_parser("info", help="show the store and host")
    parser.add_argument("-f", "--format", help="json, or a template such as '{{.store.graphRoot}}'")
    parser.set_defaults(func=run)


def _yaml(value: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, Mapping) and not item:
            lines.append(f"{pad}{key}: {{}}")
        elif isinstance(item, Mapping):
            lines.append(f"{pad}{key}:")
            lines += _yaml(item, indent + 1)
        elif isinstance(item, list):
            lines.append(f"{pad}{key}:" + ("" if item else " []"))
            lines += [f"{pad}- {entry}" for entry in item]
        else:
            lines.append(f"{pad}{key}: {item}")
    return lines


async def run(args: argparse.Namespace, ctx: Context) -> int:
    store = await ctx.store()
    images = await store.images()
    containers = await store.containers()
    layers = await store.layers()
    mounted = [c for c in containers if await store.mount_count(c.layer)]
    info = {
        "host": {
            "os": platform.system().lower(),
            "arch": platform.machine(),
            "kernel": platform.release(),
            "hostname": platform.node(),
            "cpus": os.cpu_count(),
        },
        "store": {
            "graphDriverName": store.driver.name,
            "graphRoot": str(store.root),
            "runRoot": str(store.runroot),
            "graphOptions": dict(o.partition("=")[::2] for o in ctx.config().crio.storage_option),
            "graphStatus": dict(await store.driver.status()),
            "imageStore": {"number": len(images)},
            "containerStore": {"number": len(containers), "mounted": len(mounted)},
            "layerStore": {"number": len(layers)},
        },
        "version": {"Version": __version__, "PythonVersion": platform.python_version()},
    }
    if args.format == "json":
        print(json.dumps(info, indent=4))
    elif args.format:
        print(render(args.format, info))
    else:
        print("\n".join(_yaml(info)))
    return 0
