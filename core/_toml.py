"""Write a configuration model as commented TOML (``crio config``).

tomllib only reads; this small writer covers what crio's models hold
(strings, numbers, booleans, lists of those, nested tables, tables of
tables) and puts each field's description above it as a comment.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from crio._model import BaseModel

__all__ = ["dumps_model"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"TOML cannot hold {value!r} here")
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _comment(text: str | None) -> list[str]:
    return [f"# {line}".rstrip() for line in (text or "").splitlines()]


def _table(model: BaseModel, path: list[str], doc: str | None, out: list[str]) -> None:
    out.append("")
    out.extend(_comment(doc))
    out.append("[" + ".".join(_key(p) for p in path) + "]")
    nested: list[tuple[str, Any, str | None]] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            nested.append((name, value, field.description or type(value).__doc__))
            continue
        if (
            isinstance(value, Mapping)
            and value
            and all(isinstance(v, BaseModel) for v in value.values())
        ):
            nested.append((name, value, field.description))
            continue
        out.append("")
        out.extend(_comment(field.description))
        out.append(f"{_key(name)} = {_value(value)}")
    for name, value in (model.model_extra or {}).items():
        out.append(f"{_key(name)} = {_value(value)}")
    for name, value, description in nested:
        if isinstance(value, BaseModel):
            _table(value, [*path, name], _first_line(description), out)
        else:
            for index, (sub_name, sub) in enumerate(value.items()):
                _table(sub, [*path, name, sub_name], description if index == 0 else None, out)


def _first_line(text: str | None) -> str | None:
    """The summary line of a docstring, without a leading "``[table]``: " label."""
    if not text:
        return None
    line = text.strip().splitlines()[0]
    return re.sub(r"^``\[[^\]]*\]``:\s*", "", line).capitalize()


def dumps_model(model: BaseModel, header: str = "") -> str:
    """Render ``model`` (whose fields are all tables) as commented TOML."""
    out: list[str] = _comment(header)
    for name in type(model).model_fields:
        value = getattr(model, name)
        _table(value, [name], _first_line(type(value).__doc__), out)
    return "\n".join(out).lstrip("\n") + "\n"
