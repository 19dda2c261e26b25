"""``kpod pods``: list crio's pod sandboxes."""

from __future__ import annotations

import argparse
from typing import Any

FILTERS = ("id", "name", "namespace", "status", "label")

HEADERS = {
    "ID": "POD ID",
    "Name": "NAME",
    "Namespace": "NAMESPACE",
    "Attempt": "ATTEMPT",
    "Status": "STATUS",
    "Created": "CREATED",
    "CreatedAt": "CREATED AT",
    "Containers": "# OF CONTAINERS",
    "Runtime": "RUNTIME",
    "Labels": "LABELS",
    "IPs": "IPS",
}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "pods",
        help="list pod sandboxes",
        description="List the pod sandboxes crio keeps, newest first.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only pod ids")
    parser.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
    parser.add_argument("-n", "--noheading", action="store_true", help="no header line")
    parser.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"keep matching pods ({', '.join(FILTERS)}; repeatable)",
    )
    parser.add_argument("--format", help="table, json, or a Go template such as '{{.ID}}'")
    parser.set_defaults(func=run)


def _matches(key: str, value: str, pod: Any) -> bool:
    if key == "id":
        return pod.pod_sandbox_id.startswith(value)
    if key == "name":
        return value in pod.name
    if key == "namespace":
        return pod.namespace == value
    if key == "status":
        return pod.state.value == value.lower()
    name, eq, expected = value.partition("=")
    return name in pod.labels and (not eq or pod.labels[name] == expected)


async def run(args: argparse.Namespace, ctx: Any) -> int:
    from crio.kpod.common import parse_filters
    from crio.kpod.containerview import pod_row
    from crio.kpod.output import print_rows

    filters = parse_filters(args.filter, FILTERS)
    node = ctx.node()
    state = await node.state()
    pods = sorted(state.sandboxes(), key=lambda p: -p.created_at)
    pods = [p for p in pods if all(_matches(k, v, p) for k, v in filters)]
    rows = [await pod_row(node, p, no_trunc=args.no_trunc) for p in pods]
    if args.quiet:
        for row in rows:
            print(row["ID"])
        return 0
    columns = [
        (HEADERS[f], f) for f in ("ID", "Name", "Namespace", "Status", "Created", "Containers")
    ]
    columns.append((HEADERS["Runtime"], "Runtime"))
    print_rows(rows, columns, fmt=args.format, heading=not args.noheading, headers=HEADERS)
    return 0
