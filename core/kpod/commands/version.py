"""``kpod version``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any

from crio import __version__
from crio.kpod.common import Context, render


def register(sub: Any) -> None:
    parser = sub.add_parser("version", help="show version information")
    parser.add_argument("-f", "--format", help="json, or a template such as '{{.Version}}'")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, ctx: Context) -> int:
    info = {
        "Version": __version__,
        "PythonVersion": platform.python_version(),
        "OsArch": f"{sys.platform}/{platform.machine()}",
    }
    if args.format == "json":
        print(json.dumps(info, indent=4))
    elif args.format:
        print(render(args.format, info))
    else:
        print(f"Version:       {info['Version']}")
        print(f"Python:        {info['PythonVersion']}")
        print(f"OS/Arch:       {info['OsArch']}")
    return 0
