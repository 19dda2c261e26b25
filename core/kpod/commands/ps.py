"""``kpod ps``: list crio's containers (Docker's ``docker ps``)."""

from __future__ import annotations

import argparse
import re
from typing import Any

FILTERS = ("id", "name", "status", "label", "ancestor", "pod")
STATUSES = ("created", "running", "paused", "exited", "unknown")

#: Headers of the fields a ``--format "table ..."`` may use.
HEADERS = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Ports": "PORTS",
    "State": "STATE",
    "Status": "STATUS",
    "Size": "SIZE",
    "Names": "NAMES",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "Pod": "POD ID",
    "PodName": "POD NAME",
    "Namespace": "NAMESPACE",
    "Runtime": "RUNTIME",
    "ExitCode": "EXIT CODE",
}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "ps",
        help="list containers",
        description="List the containers crio keeps, running ones by default. The status "
        "comes from the runtime, so an exit while crio was down and a paused container show.",
    )
    parser.add_argument("-a", "--all", action="store_true", help="show every container")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only container ids")
    parser.add_argument("--no-trunc", action="store_true", help="do not truncate ids or commands")
    parser.add_argument("--pod", action="store_true", help="add the pod's id and name")
    parser.add_argument("-s", "--size", action="store_true", help="add the containers' sizes")
    parser.add_argument("-n", "--noheading", action="store_true", help="no header line")
    parser.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"keep matching containers ({', '.join(FILTERS)}; repeatable)",
    )
    parser.add_argument(
        "--format", help="table, json, or a Go template such as '{{.ID}} {{.Names}}'"
    )
    parser.set_defaults(func=run)


def _matches(key: str, value: str, row: dict[str, Any], ctr: Any, images: dict[str, str]) -> bool:
    if key == "id":
        return ctr.container_id.startswith(value)
    if key == "name":
        try:
            return re.search(value, row["Names"]) is not None or value == ctr.name
        except re.error:
            return value in row["Names"]
    if key == "status":
        return row["State"] == value
    if key == "label":
        name, eq, expected = value.partition("=")
        return name in ctr.labels and (not eq or ctr.labels[name] == expected)
    if key == "ancestor":
        image_id = ctr.image_ref.removeprefix("sha256:")
        wanted = images.get(value, value).removeprefix("sha256:")
        return value in (ctr.image, ctr.user_specified_image) or (
            len(wanted) >= 3 and image_id.startswith(wanted)
        )
    # pod: its id (or prefix) or its name
    return ctr.pod_sandbox_id.startswith(value) or row["PodName"] == value


async def _image_ids(ctx: Any, filters: list[tuple[str, str]]) -> dict[str, str]:
    """Image names given to ancestor= mapped to their ids."""
    from crio.errors import NotFoundError
    from crio.kpod.imageview import resolve_image

    found = {}
    for key, value in filters:
        if key == "ancestor":
            try:
                image, _ = await resolve_image(await ctx.store(), value)
                found[value] = image.id
            except NotFoundError:
                pass
    return found


async def run(args: argparse.Namespace, ctx: Any) -> int:
    from crio.kpod.common import UsageError, parse_filters
    from crio.kpod.containerview import container_row
    from crio.kpod.output import print_rows

    filters = parse_filters(args.filter, FILTERS)
    for key, value in filters:
        if key == "status" and value not in STATUSES:
            raise UsageError(f"invalid filter 'status={value}': use one of {', '.join(STATUSES)}")
    node = ctx.node()
    state = await node.state()
    images = await _image_ids(ctx, filters)
    containers = sorted((c for c in state.containers() if not c.infra), key=lambda c: -c.created_at)
    rows = []
    for ctr in containers:
        row = await container_row(node, ctr, no_trunc=args.no_trunc, size=args.size)
        if (
            not args.all
            and row["State"] not in ("running", "paused")
            and not any(k == "status" for k, _ in filters)
        ):
            continue
        if all(_matches(k, v, row, ctr, images) for k, v in filters):
            rows.append(row)
    if args.quiet:
        for row in rows:
            print(row["ID"])
        return 0
    columns = [(HEADERS[f], f) for f in ("ID", "Image", "Command", "RunningFor", "Status")]
    columns += [(HEADERS["Ports"], "Ports"), (HEADERS["Names"], "Names")]
    if args.size:
        columns.append((HEADERS["Size"], "Size"))
    if args.pod:
        columns += [(HEADERS["Pod"], "Pod"), (HEADERS["PodName"], "PodName")]
    print_rows(rows, columns, fmt=args.format, heading=not args.noheading, headers=HEADERS)
    return 0
