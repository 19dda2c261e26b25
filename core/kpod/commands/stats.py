"""``kpod stats``: containers' resource use from their cgroups (Docker's ``docker stats``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

HEADERS = {
    "ID": "CONTAINER ID",
    "Name": "NAME",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "stats",
        help="show containers' resource use",
        description="Show CPU, memory, network, block I/O and process counts of running "
        "containers (all of them, or the named ones), sampled from their cgroups and their "
        "pod's network namespace. CPU % is measured over one interval.",
    )
    parser.add_argument("containers", nargs="*", metavar="CONTAINER")
    parser.add_argument("-a", "--all", action="store_true", help="also stopped containers")
    parser.add_argument(
        "--no-stream", action="store_true", help="print one sample and exit, not a live view"
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="time between samples (default 1)",
    )
    parser.add_argument("--no-trunc", action="store_true", help="full container ids")
    parser.add_argument("--format", help="table, json, or a Go template such as '{{.CPUPerc}}'")
    parser.set_defaults(func=run)


def _binary(size: float) -> str:
    """Docker's ``units.BytesSize``: "1.5MiB"."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024.0
        i += 1
    return f"{size:.4g}{units[i]}"


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def _sample(node: Any, ctr: Any) -> tuple[Any, int, int]:
    """(container stats, network rx bytes, tx bytes)."""
    stats, pod = await node.stats(ctr)
    interfaces = pod.interfaces if pod is not None else ()
    return stats, sum(i.rx_bytes for i in interfaces), sum(i.tx_bytes for i in interfaces)


def _row(node: Any, ctr: Any, before: Any, after: Any, no_trunc: bool) -> dict[str, Any]:
    from crio.kpod.common import human_size

    first, _, _ = before
    stats, rx, tx = after
    elapsed = max(stats.timestamp - first.timestamp, 1)
    cpu = max(stats.cpu_usage_core_nanoseconds - first.cpu_usage_core_nanoseconds, 0)
    limit = stats.memory_limit_bytes or _host_memory()
    used = stats.memory_working_set_bytes or stats.memory_usage_bytes
    return {
        "ID": ctr.container_id if no_trunc else ctr.container_id[:12],
        "Name": node.display_name(ctr),
        "CPUPerc": f"{100.0 * cpu / elapsed:.2f}%",
        "MemUsage": f"{_binary(used)} / {_binary(limit)}",
        "MemPerc": f"{100.0 * used / limit:.2f}%" if limit else "--",
        "NetIO": f"{human_size(rx)} / {human_size(tx)}",
        "BlockIO": f"{human_size(stats.block_read_bytes)} / {human_size(stats.block_write_bytes)}",
        # 0: the runtime could not tell (CRI's ContainerStats, asked of crio for a pod
        # VM, has no process count); a running container has at least one process.
        "PIDs": str(stats.process_count) if stats.process_count else "--",
    }


async def _containers(node: Any, args: argparse.Namespace) -> list[Any]:
    from crio.kpod.containerview import status_of

    if args.containers:
        return [await node.container(name) for name in args.containers]
    state = await node.state()
    found = []
    for ctr in sorted(state.containers(), key=lambda c: -c.created_at):
        if ctr.infra:
            continue
        if args.all or status_of(ctr, await node.live(ctr)).state in ("running", "paused"):
            found.append(ctr)
    return found


async def run(args: argparse.Namespace, ctx: Any) -> int:
    from crio.kpod.common import UsageError
    from crio.kpod.output import compile_template, print_rows

    if args.interval <= 0:
        raise UsageError(f"--interval {args.interval}: must be positive")
    fmt = args.format
    if fmt and fmt not in ("json", "table") and not fmt.startswith("table "):
        compile_template(fmt)
    node = ctx.node()
    containers = await _containers(node, args)
    columns = [(HEADERS[f], f) for f in HEADERS]
    samples = {c.container_id: await _sample(node, c) for c in containers}
    tty = sys.stdout.isatty()
    while True:
        await asyncio.sleep(args.interval)
        rows = []
        for ctr in containers:
            now = await _sample(node, ctr)
            rows.append(_row(node, ctr, samples[ctr.container_id], now, args.no_trunc))
            samples[ctr.container_id] = now
        if tty and not args.no_stream:
            print("\x1b[2J\x1b[H", end="")  # redraw in place, as docker stats does
        print_rows(rows, columns, fmt=fmt, headers=HEADERS)
        sys.stdout.flush()
        if args.no_stream:
            return 0
