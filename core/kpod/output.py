"""kpod's one output implementation: Docker-CLI tables, ``--format`` and its templates.

Every listing command hands rows (dicts keyed by Docker's field names) and
its columns to :func:`print_rows`; every command that shows whole objects
hands them to :func:`print_objects`. ``--format`` means the same everywhere:

- absent or ``table``: the command's own table;
- ``table TEMPLATE``: a table whose columns are the template's tab-separated
  cells, headed by the fields' names (``{{.ID}}`` -> ``CONTAINER ID``);
- ``json``: one compact JSON object per line (as ``docker ... --format json``);
- anything else: a Go template (:mod:`crio.kpod.gotemplate`) per object.

Tables are aligned as the Docker CLI's ``text/tabwriter`` aligns them
(minimum cell width 10, padding 3, the last column unpadded).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crio.kpod.gotemplate import Template, TemplateError

__all__ = ["compile_template", "print_objects", "print_rows", "render", "tabulate"]

#: Docker's tabwriter settings (cli/command/formatter: minwidth 10, padding 3).
MIN_WIDTH = 10
PADDING = 3


def _usage(message: str) -> Exception:
    from crio.kpod.common import UsageError

    return UsageError(message)


def compile_template(source: str) -> Template:
    """:raises UsageError: the template does not parse (exit 125, kpod's own failure)."""
    try:
        return Template(source.replace("\\t", "\t").replace("\\n", "\n"))
    except TemplateError as exc:
        raise _usage(f"template parsing error: {exc} (in {source!r})") from None


def render(source: str | Template, item: Any) -> str:
    """``item`` through the Go template ``source``. :raises UsageError:"""
    template = compile_template(source) if isinstance(source, str) else source
    try:
        return template.execute(item)
    except TemplateError as exc:
        raise _usage(f"template: {exc} (in {template.source!r})") from None


def tabulate(lines: Sequence[str]) -> list[str]:
    """Align tab-separated cells into columns as Go's tabwriter(10, 1, 3, ' ') does."""
    table = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for cells in table:
        for i, cell in enumerate(cells[:-1]):  # the last cell has no terminating tab
            widths[i] = max(widths.get(i, MIN_WIDTH), len(cell) + PADDING)
    out = []
    for cells in table:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(cells[:-1])]
        out.append("".join(padded) + cells[-1])
    return out


def _header(field: str, headers: Mapping[str, str]) -> str:
    if field in headers:
        return headers[field]
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", field).upper()


def _header_line(template: str, headers: Mapping[str, str]) -> str:
    cells = []
    for cell in template.split("\t"):
        fields = compile_template(cell).fields() if "{{" in cell else []
        cells.append(" ".join(_header(f, headers) for f in fields))
    return "\t".join(cells)


def print_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    fmt: str | None = None,
    heading: bool = True,
    headers: Mapping[str, str] | None = None,
    out: Callable[[str], None] = print,
) -> None:
    """Print ``rows`` as the table of ``columns`` ((header, field) pairs), JSON or a template.

    ``headers`` names the header of fields a ``table TEMPLATE`` may use beyond
    ``columns`` (``{"ID": "CONTAINER ID"}``).
    """
    names = {field: header for header, field in columns}
    names.update(headers or {})
    fmt = (fmt or "").strip()
    if fmt == "json":
        for row in rows:
            out(json.dumps(row, separators=(",", ":"), ensure_ascii=False))
        return
    if fmt and not fmt.startswith("table"):
        template = compile_template(fmt)
        for row in rows:
            out(render(template, row))
        return
    source = fmt[len("table") :].strip() if fmt else ""
    if not source:
        source = "\t".join("{{." + field + "}}" for _, field in columns)
    source = source.replace("\\t", "\t")
    template = compile_template(source)
    lines = [_header_line(source, names)] if heading else []
    lines += [render(template, row) for row in rows]
    for line in tabulate(lines):
        out(line.rstrip())


def print_objects(
    objects: Sequence[Any], fmt: str | None, out: Callable[[str], None] = print
) -> None:
    """Whole objects (``inspect``, ``info``): indented JSON array, JSON lines, or a template."""
    fmt = (fmt or "").strip()
    if not fmt:
        out(json.dumps(list(objects), indent=4, ensure_ascii=False))
    elif fmt == "json":
        for item in objects:
            out(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
    else:
        template = compile_template(fmt)
        for item in objects:
            out(render(template, item))


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (stdout) is a terminal: progress bars only then."""
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
