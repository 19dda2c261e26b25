"""kpod's one output layer: Docker-CLI tables, json lines, templates, exit codes."""

from __future__ import annotations

import json

import pytest

from crio import errors
from crio.kpod.cli import exit_code
from crio.kpod.common import UsageError
from crio.kpod.output import print_objects, print_rows, tabulate

ROWS = [
    {"ID": "0123456789ab", "Names": "web", "Status": "Up 2 minutes"},
    {"ID": "ba9876543210", "Names": "a-much-longer-name", "Status": "Exited (0) 1 second ago"},
]
COLUMNS = [("CONTAINER ID", "ID"), ("NAMES", "Names"), ("STATUS", "Status")]


def lines(**kwargs) -> list[str]:
    out: list[str] = []
    print_rows(ROWS, COLUMNS, out=out.append, **kwargs)
    return out


def test_table_aligns_like_docker_tabwriter() -> None:
    # Go's tabwriter(minwidth 10, padding 3): each column is its widest cell + 3, at least 10.
    assert lines() == [
        "CONTAINER ID".ljust(15) + "NAMES".ljust(21) + "STATUS",
        "0123456789ab".ljust(15) + "web".ljust(21) + "Up 2 minutes",
        "ba9876543210".ljust(15) + "a-much-longer-name".ljust(21) + "Exited (0) 1 second ago",
    ]
    assert tabulate(["a\tb", "ccc\td"]) == ["a         b", "ccc       d"]


def test_table_template_takes_headers_from_fields() -> None:
    assert lines(fmt="table {{.Names}}\\t{{.ID}}") == [
        "NAMES".ljust(21) + "CONTAINER ID",
        "web".ljust(21) + "0123456789ab",
        "a-much-longer-name".ljust(21) + "ba9876543210",
    ]
    assert lines(fmt="table") == lines()
    assert lines(heading=False)[0].startswith("0123456789ab")


def test_json_and_templates() -> None:
    assert [json.loads(line) for line in lines(fmt="json")] == ROWS
    assert lines(fmt="{{.Names}}:{{.ID}}") == [
        "web:0123456789ab",
        "a-much-longer-name:ba9876543210",
    ]
    assert [json.loads(line) for line in lines(fmt="{{json .}}")] == ROWS
    with pytest.raises(UsageError, match="Nope"):
        lines(fmt="{{.Nope}}")
    with pytest.raises(UsageError, match="parsing"):
        lines(fmt="{{if .ID}}")


def test_objects() -> None:
    out: list[str] = []
    print_objects([{"Id": "x", "State": {"Status": "running"}}], None, out.append)
    assert json.loads(out[0]) == [{"Id": "x", "State": {"Status": "running"}}]
    out.clear()
    print_objects([{"Id": "x", "State": {"Status": "running"}}], "{{.State.Status}}", out.append)
    assert out == ["running"]


def test_exit_codes_follow_docker() -> None:
    assert exit_code(UsageError("bad flag")) == 125
    assert exit_code(errors.ConfigError("bad")) == 125
    assert exit_code(errors.NotFoundError("no such container")) == 1
    assert exit_code(errors.WrongStateError("not running")) == 1
    assert exit_code(RuntimeError("a bug")) == 125
