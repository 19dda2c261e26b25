"""``kpod logs``: a container's output from its CRI log file."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

#: How often ``--follow`` looks for more output (the file grows as conmon writes).
FOLLOW_POLL = 0.1


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "logs",
        help="show a container's output",
        description="Print what a container wrote to stdout and stderr, from the CRI log file "
        "its monitor keeps (partial lines joined); stderr lines go to stderr.",
    )
    parser.add_argument("container", metavar="CONTAINER")
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the container exits"
    )
    parser.add_argument(
        "--since", metavar="TIME", help="only lines since TIME (RFC 3339, or a duration: 10m)"
    )
    parser.add_argument("--tail", metavar="N", default="all", help="only the last N lines")
    parser.add_argument(
        "-t", "--timestamps", action="store_true", help="prefix each line with its time"
    )
    parser.set_defaults(func=run)


def _since(text: str | None) -> int:
    from crio.config import parse_duration
    from crio.kpod.common import UsageError
    from crio.kpod.crilog import parse_timestamp

    if not text:
        return 0
    stamp = parse_timestamp(text.encode())
    if stamp is not None:
        return stamp
    try:
        return time.time_ns() - int(parse_duration(text) * 1e9)
    except ValueError:
        raise UsageError(f"--since {text!r}: not an RFC 3339 time nor a duration") from None


def _tail(text: str) -> int | None:
    from crio.kpod.common import UsageError

    if text == "all":
        return None
    if not text.isdigit():
        raise UsageError(f"--tail {text!r}: expected a number of lines or 'all'")
    return int(text)


class _Printer:
    def __init__(self, timestamps: bool, since: int) -> None:
        from crio.kpod.crilog import LineJoiner

        self.joiner = LineJoiner()
        self.timestamps = timestamps
        self.since = since
        self.rest = b""

    def lines(self, data: bytes) -> list[Any]:
        from crio.kpod.crilog import parse_line, parse_timestamp

        data = self.rest + data
        *complete, self.rest = data.split(b"\n")
        out = []
        for raw in complete:
            record = parse_line(raw)
            line = self.joiner.feed(record) if record is not None else None
            if line is not None and (parse_timestamp(line.timestamp) or 0) >= self.since:
                out.append(line)
        return out

    def write(self, lines: list[Any]) -> None:
        for line in lines:
            text = (line.timestamp + b" " if self.timestamps else b"") + line.content
            fd = 2 if line.stream == "stderr" else 1
            (sys.stderr if fd == 2 else sys.stdout).flush()
            os.write(fd, text + (b"" if line.partial else b"\n"))


async def _follow(node: Any, ctr: Any, path: str, printer: _Printer, offset: int) -> None:
    """Print what is appended until the container has exited and the file is drained."""
    from crio.oci.runtime import State

    runtime = await node.runtime(ctr.runtime_handler)
    waiter = asyncio.ensure_future(runtime.wait_container(ctr.container_id))
    inode = os.stat(path).st_ino if os.path.exists(path) else 0
    try:
        while True:
            finished = waiter.done() or (await node.live(ctr)).state is State.STOPPED
            try:
                with open(path, "rb") as handle:
                    if os.fstat(handle.fileno()).st_ino != inode:  # rotated (ReopenContainerLog)
                        inode, offset = os.fstat(handle.fileno()).st_ino, 0
                    handle.seek(offset)
                    data = handle.read()
                    offset += len(data)
            except FileNotFoundError:
                data = b""
            printer.write(printer.lines(data))
            if finished and not data:
                break
            await asyncio.sleep(FOLLOW_POLL)
    finally:
        waiter.cancel()
    printer.write(printer.joiner.flush())


async def run(args: argparse.Namespace, ctx: Any) -> int:
    from crio.errors import NotFoundError

    since, tail = _since(args.since), _tail(args.tail)
    node = ctx.node()
    ctr = await node.container(args.container)
    path = ctr.log_path
    printer = _Printer(args.timestamps, since)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        if not args.follow:
            raise NotFoundError(f"container {ctr.container_id}: no log file {path}") from None
        data = b""
    lines = printer.lines(data)
    if not args.follow:
        lines += printer.joiner.flush()
    if tail is not None:
        lines = lines[-tail:] if tail else []
    printer.write(lines)
    if args.follow:
        await _follow(node, ctr, path, printer, len(data))
    return 0
