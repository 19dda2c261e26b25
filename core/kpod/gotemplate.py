"""A small Go ``text/template`` engine for kpod's ``--format`` (sans-I/O, no imports but json).

Covers what Docker CLI format strings use: ``{{.Field}}``, ``{{.A.B}}``,
``{{json .}}``, pipelines (``{{.Names | upper}}``), ``{{if}}``/``{{else if}}``/
``{{else}}``, ``{{range}}`` (with ``$i, $v :=``), ``{{with}}``, variables,
string/number/bool literals, ``{{/* comments */}}`` and the ``{{-``/``-}}``
trim markers, with Docker's functions (json, join, split, lower, upper,
title, truncate, pad, println) and Go's (len, index, printf, print, eq, ne,
lt, le, gt, ge, and, or, not).

Data are plain Python values: a dict stands for a Go struct (a missing field
is an error, as Go reports it) and values print as Go's ``%v`` prints them
(``[a b]``, ``map[k:v]``, ``true``, ``<no value>``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Template", "TemplateError", "go_string"]


class TemplateError(ValueError):
    """The template does not parse, or does not apply to the data."""


# -- values -------------------------------------------------------------------


def go_string(value: Any) -> str:
    """``value`` as Go's ``fmt.Sprint`` (``%v``) writes it."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) or abs(value) >= 1e21 else str(int(value))
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_inner(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_inner(v) for v in value) + "]"
    return str(value)


def _inner(value: Any) -> str:
    return "<nil>" if value is None else go_string(value)


def _truth(value: Any) -> bool:
    return bool(value) if value is not None else False


_VERB = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d+))?([vsdqtfxX%])")


def _printf(fmt: str, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the verbs format strings use (v s q t d x X f %)."""
    queue = list(args)

    def one(match: re.Match[str]) -> str:
        flags, width, precision, verb = match.groups()
        if verb == "%":
            return "%"
        if not queue:
            return f"%!{verb}(MISSING)"
        arg = queue.pop(0)
        if verb in "vst":
            text = go_string(arg)
        elif verb == "q":
            text = json.dumps(go_string(arg), ensure_ascii=False)
        elif verb in "dxX":
            try:
                number = int(arg)
            except (TypeError, ValueError):
                return f"%!{verb}({go_string(arg)})"
            sign = "+" if "+" in flags else ""
            text = format(number, sign + ("d" if verb == "d" else verb))
        else:
            try:
                text = format(float(arg), f".{precision or 6}f")
            except (TypeError, ValueError):
                return f"%!{verb}({go_string(arg)})"
        if precision and verb in "vsq":
            text = text[: int(precision)]
        size = int(width or 0)
        if "-" in flags:
            return text.ljust(size)
        return text.rjust(size, "0" if "0" in flags and verb in "dxXf" else " ")

    return _VERB.sub(one, fmt)


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            item = item[key]
        except (KeyError, IndexError, TypeError):
            if isinstance(item, Mapping):
                return None
            raise TemplateError(f"index of {go_string(item)!r} with {key!r}") from None
    return item


def _truncate(value: Any, n: int) -> str:
    text = go_string(value)
    return text[:n]


def _compare(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def check(a: Any, *others: Any) -> bool:
        try:
            return any(op(a, b) for b in others) if op is _eq else op(a, others[0])
        except TypeError:
            raise TemplateError(f"incompatible types for comparison: {a!r}, {others!r}") from None

    return check


def _eq(a: Any, b: Any) -> bool:
    return bool(a == b)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False),
    "join": lambda items, sep: sep.join(go_string(i) for i in items or ()),
    "split": lambda text, sep: str(text).split(sep),
    "lower": lambda v: go_string(v).lower(),
    "upper": lambda v: go_string(v).upper(),
    "title": lambda v: go_string(v).title(),
    "truncate": _truncate,
    "pad": lambda v, before, after: " " * int(before) + go_string(v) + " " * int(after),
    "println": lambda *a: " ".join(go_string(v) for v in a) + "\n",
    "print": lambda *a: "".join(go_string(v) for v in a),
    "printf": _printf,
    "len": lambda v: len(v) if v is not None else 0,
    "index": _index,
    "eq": _compare(_eq),
    "ne": _compare(lambda a, b: a != b),
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "not": lambda v: not _truth(v),
    # Evaluated in Template._command (they return an argument, not a bool).
    "and": lambda *a: a,
    "or": lambda *a: a,
}


# -- lexing -------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<var>\$[A-Za-z0-9_]*)
    | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    | (?P<decl>:=|=)
    | (?P<punct>[|(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )(?P<chain>(?:\.[A-Za-z0-9_]+)*)""",
    re.VERBOSE,
)


_KINDS = ("str", "raw", "num", "var", "field", "decl", "punct", "word")


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    chain: tuple[str, ...] = ()


def _lex(source: str) -> list[_Tok]:
    tokens, pos = [], 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        match = _TOKEN.match(source, pos)
        if match is None or match.end() == pos:
            raise TemplateError(f"unexpected {source[pos:].strip()[:10]!r} in action")
        kind = next(k for k in _KINDS if match.group(k) is not None)
        chain = tuple(p for p in match.group("chain").split(".") if p)
        tokens.append(_Tok(kind, match.group(kind), chain))
        pos = match.end()
    return tokens


# -- parse tree -----------------------------------------------------------------


@dataclass(slots=True)
class _Pipe:
    decl: tuple[str, ...]  # variables assigned (range may declare two)
    commands: list[list[Any]]  # each: operands (tokens or nested _Pipe)


@dataclass(slots=True)
class _Block:
    kind: str  # "if", "range", "with"
    pipe: _Pipe
    body: list[Any] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


_ACTION = re.compile(r"{{(-\s)?(.*?)(\s-)?}}", re.DOTALL)


def _parse_pipe(tokens: list[_Tok]) -> _Pipe:
    decl: tuple[str, ...] = ()
    for i, tok in enumerate(tokens):
        if tok.kind == "decl":
            names = [t.text for t in tokens[:i] if t.kind == "var"]
            if not names or any(t.kind not in ("var", "punct") for t in tokens[:i]):
                raise TemplateError("bad variable declaration")
            decl, tokens = tuple(names), tokens[i + 1 :]
            break
    commands: list[list[Any]] = [[]]
    stack: list[list[list[Any]]] = []
    for tok in tokens:
        if tok.text == "(" and tok.kind == "punct":
            stack.append(commands)
            commands = [[]]
        elif tok.text == ")" and tok.kind == "punct":
            if not stack:
                raise TemplateError("unexpected ')'")
            inner = _Pipe((), commands)
            commands = stack.pop()
            commands[-1].append(inner)
        elif tok.text == "|" and tok.kind == "punct":
            commands.append([])
        else:
            commands[-1].append(tok)
    if stack:
        raise TemplateError("unclosed '('")
    if any(not c for c in commands):
        raise TemplateError("missing value for command")
    return _Pipe(decl, commands)


def _parse(source: str) -> list[Any]:
    root: list[Any] = []
    stack: list[tuple[_Block, list[Any]]] = []
    body = root
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            body.append(text)
        pos, trim_next = match.end(), bool(match.group(3))
        inner = match.group(2).strip()
        if inner.startswith("/*"):
            if not inner.endswith("*/"):
                raise TemplateError("unclosed comment")
            continue
        tokens = _lex(inner)
        if not tokens:
            raise TemplateError("empty action")
        head = tokens[0].text if tokens[0].kind == "word" else ""
        if head in ("if", "range", "with"):
            block = _Block(head, _parse_pipe(tokens[1:]))
            body.append(block)
            stack.append((block, body))
            body = block.body
        elif head == "else":
            if not stack or (stack[-1][0].kind == "range" and len(tokens) > 1):
                raise TemplateError("unexpected {{else}}")
            block, parent = stack[-1]
            if len(tokens) > 1 and tokens[1].text in ("if", "with"):
                # {{else if X}}: a block inside the else branch, closed by the same {{end}}.
                nested = _Block(tokens[1].text, _parse_pipe(tokens[2:]))
                block.otherwise = [nested]
                stack[-1] = (nested, parent)
                body = nested.body
            else:
                body = block.otherwise
        elif head == "end":
            if not stack:
                raise TemplateError("unexpected {{end}}")
            _, body = stack.pop()
        else:
            body.append(_parse_pipe(tokens))
    tail = source[pos:]
    if "{{" in tail:
        raise TemplateError("unclosed action")
    if trim_next:
        tail = tail.lstrip()
    if tail:
        body.append(tail)
    if stack:
        raise TemplateError(f"unexpected EOF: {{{{{stack[-1][0].kind}}}}} has no {{{{end}}}}")
    return root


# -- execution ----------------------------------------------------------------


class Template:
    """A parsed template; ``execute(data)`` renders it.

    :raises TemplateError: (from the constructor) the template does not parse.
    """

    def __init__(self, source: str, functions: Mapping[str, Callable[..., Any]] | None = None):
        self.source = source
        self.functions = {**FUNCTIONS, **(functions or {})}
        self._tree = _parse(source)

    def execute(self, data: Any) -> str:
        """:raises TemplateError: a field the data lacks, a bad function call."""
        out: list[str] = []
        self._run(self._tree, data, {"$": data}, out)
        return "".join(out)

    def fields(self) -> list[str]:
        """The top-level ``.Field`` names the template prints, in order (for table headers)."""
        names = []
        for node in self._tree:
            if isinstance(node, _Pipe):
                for tok in node.commands[0]:
                    if isinstance(tok, _Tok) and tok.kind == "field" and tok.text != ".":
                        names.append(tok.text.lstrip(".").split(".")[-1])
                        break
        return names

    def _run(self, nodes: Sequence[Any], dot: Any, env: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Pipe):
                value = self._pipe(node, dot, env)
                if not node.decl:
                    out.append(go_string(value))
            else:
                self._block(node, dot, env, out)

    def _block(self, block: _Block, dot: Any, env: dict[str, Any], out: list[str]) -> None:
        scope = dict(env)
        if block.kind == "range":
            items = self._pipe(_Pipe((), block.pipe.commands), dot, scope)
            pairs: list[tuple[Any, Any]]
            if isinstance(items, Mapping):
                pairs = [(k, items[k]) for k in sorted(items)]
            elif isinstance(items, (list, tuple)):
                pairs = list(enumerate(items))
            elif items is None:
                pairs = []
            elif isinstance(items, int):
                pairs = [(i, i) for i in range(items)]
            else:
                raise TemplateError(f"range can't iterate over {go_string(items)}")
            if not pairs:
                self._run(block.otherwise, dot, scope, out)
            for key, item in pairs:
                if len(block.pipe.decl) == 2:
                    scope[block.pipe.decl[0]], scope[block.pipe.decl[1]] = key, item
                elif block.pipe.decl:
                    scope[block.pipe.decl[0]] = item
                self._run(block.body, item, scope, out)
            return
        value = self._pipe(block.pipe, dot, scope)
        if _truth(value):
            self._run(block.body, value if block.kind == "with" else dot, scope, out)
        else:
            self._run(block.otherwise, dot, scope, out)

    def _pipe(self, pipe: _Pipe, dot: Any, env: dict[str, Any]) -> Any:
        value: Any = _NOTHING
        for command in pipe.commands:
            value = self._command(command, dot, env, value)
        for name in pipe.decl[-1:]:
            env[name] = value
        return value

    def _command(self, command: list[Any], dot: Any, env: dict[str, Any], piped: Any) -> Any:
        head = command[0]
        if (
            isinstance(head, _Tok)
            and head.kind == "word"
            and head.text
            not in (
                "true",
                "false",
                "nil",
            )
        ):
            func = self.functions.get(head.text)
            if func is None:
                raise TemplateError(f'function "{head.text}" not defined')
            args = [self._operand(a, dot, env) for a in command[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            if head.text in ("and", "or"):
                return _and_or(head.text, args)
            try:
                return func(*args)
            except TypeError as exc:
                raise TemplateError(f"error calling {head.text}: {exc}") from None
        if len(command) > 1 or piped is not _NOTHING:
            raise TemplateError(f"can't give argument to non-function {_describe(head)}")
        return self._operand(head, dot, env)

    def _operand(self, tok: Any, dot: Any, env: dict[str, Any]) -> Any:
        if isinstance(tok, _Pipe):
            return self._pipe(tok, dot, env)
        if tok.kind == "field":
            value = _walk(dot, tok.text.strip(".").split(".") if tok.text != "." else [])
        elif tok.kind == "var":
            if tok.text not in env:
                raise TemplateError(f"undefined variable: {tok.text}")
            value = env[tok.text]
        elif tok.kind == "str":
            value = json.loads(tok.text)
        elif tok.kind == "raw":
            value = tok.text[1:-1]
        elif tok.kind == "num":
            value = float(tok.text) if "." in tok.text else int(tok.text)
        elif tok.kind == "word" and tok.text in ("true", "false", "nil"):
            value = {"true": True, "false": False, "nil": None}[tok.text]
        elif tok.kind == "word":
            return self._command([tok], dot, env, _NOTHING)
        else:
            raise TemplateError(f"unexpected {tok.text!r} in operand")
        return _walk(value, list(tok.chain)) if tok.chain else value


_NOTHING = object()


def _walk(value: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(value, Mapping):
            if part not in value:
                raise TemplateError(f"can't evaluate field {part} in type {_type_name(value)}")
            value = value[part]
        elif value is None:
            raise TemplateError(f"nil pointer evaluating .{part}")
        else:
            raise TemplateError(f"can't evaluate field {part} in type {_type_name(value)}")
    return value


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _describe(tok: Any) -> str:
    return tok.text if isinstance(tok, _Tok) else "(pipeline)"


def _and_or(name: str, args: list[Any]) -> Any:
    for arg in args:
        if _truth(arg) != (name == "and"):
            return arg
    return args[-1] if args else None
