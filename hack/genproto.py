#!/usr/bin/env python3
"""Regenerate the CRI v1 Python stubs in core/api/ from core/api/api.proto.

Usage::

    python hack/genproto.py          # rewrite core/api/api_pb2{.py,.pyi,_grpc.py}
    python hack/genproto.py --check  # exit 1 if the committed stubs are stale

The proto is copied into a temporary tree as ``crio/api/api.proto`` and
compiled with ``-I <tmp>``, so the generated modules name themselves (and
import each other) as ``crio.api.api_pb2``, the import path the installed
package uses. Needs ``grpcio-tools`` (pinned in the ``test`` extra of
pyproject.toml: the stubs depend on the generator version).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
API_DIR = REPO / "core" / "api"
PROTO = API_DIR / "api.proto"
OUTPUTS = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


class GenerateError(Exception):
    """protoc failed or did not write the expected files."""


def generate(dest: Path) -> list[Path]:
    """Compile api.proto and put the three stub files into ``dest``.

    :param dest: an existing directory; files of the same name are replaced.
    :returns: the paths written, in :data:`OUTPUTS` order.
    :raises GenerateError: naming protoc's exit status and its stderr.
    """
    with tempfile.TemporaryDirectory(prefix="crio-genproto-") as tmp:
        root = Path(tmp)
        package_dir = root / "crio" / "api"
        package_dir.mkdir(parents=True)
        shutil.copyfile(PROTO, package_dir / "api.proto")
        out = root / "out"
        out.mkdir()
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{root}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            "crio/api/api.proto",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise GenerateError(
                f"protoc exited with status {proc.returncode}: {proc.stderr.strip()}"
            )
        written = []
        for name in OUTPUTS:
            produced = out / "crio" / "api" / name
            if not produced.is_file():
                raise GenerateError(f"protoc did not produce crio/api/{name}")
            target = dest / name
            shutil.copyfile(produced, target)
            written.append(target)
        return written


def stale_outputs() -> list[str]:
    """Return the names of committed stubs that differ from fresh output."""
    with tempfile.TemporaryDirectory(prefix="crio-genproto-check-") as tmp:
        fresh = Path(tmp)
        generate(fresh)
        return [
            name
            for name in OUTPUTS
            if not (API_DIR / name).is_file()
            or not filecmp.cmp(fresh / name, API_DIR / name, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the committed stubs with fresh output instead of writing them",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_outputs()
            if stale:
                print(
                    "genproto: stubs in core/api/ are stale or missing: "
                    + ", ".join(stale)
                    + "\nRun `python hack/genproto.py` and commit the result.",
                    file=sys.stderr,
                )
                return 1
            print("genproto: core/api stubs are up to date")
            return 0
        for path in generate(API_DIR):
            print(f"genproto: wrote {path.relative_to(REPO)}")
        return 0
    except GenerateError as exc:
        print(f"genproto: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
