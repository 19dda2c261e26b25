"""Typed, validated tables for crio.toml: the part of pydantic's API that crio uses.

crio's configuration was written as pydantic models; importing pydantic and
building their schemas cost every ``crio`` and ``kpod`` process about 150 ms
of CPU and the daemon about 9 MB for good (bench/README.md, "Where the
daemon's memory goes"). This module keeps the same way of writing a table::

    class ApiConfig(BaseModel):
        model_config = ConfigDict(extra="forbid", validate_assignment=True)

        stream_port: int = Field(0, ge=0, le=65535, description="Its port; 0 picks a free one.")

        @field_validator("stream_port")
        @classmethod
        def _not_privileged(cls, value: int) -> int: ...

and validates what crio's files hold: ``str``, ``int``, ``bool``, ``float``,
``Literal[...]``, ``list[T]``, ``dict[str, T]``, nested models and
``Annotated[T, AfterValidator(f)]``, with ``ge``/``gt``/``le`` bounds. Values
are converted the way pydantic's lax mode does (``"12"`` for an int, ``"yes"``
for a bool). :class:`ValidationError` lists every problem with pydantic's
error types, locations and messages, which :func:`crio.config.load` turns
into its one-line errors.
"""

from __future__ import annotations

import copy
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

__all__ = [
    "AfterValidator",
    "BaseModel",
    "ConfigDict",
    "Field",
    "FieldInfo",
    "PrivateAttr",
    "ValidationError",
    "field_validator",
    "model_validator",
]

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class AfterValidator:
    """In ``Annotated[T, AfterValidator(f)]``: ``f(value)`` after ``T`` accepted the value."""

    func: Callable[[Any], Any]


@dataclass(slots=True)
class FieldInfo:
    """One field of a model (``Model.model_fields[name]``)."""

    default: Any = _MISSING
    default_factory: Callable[[], Any] | None = None
    description: str | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    #: The resolved annotation (``Annotated`` stripped), set when the class is made.
    annotation: Any = None
    #: The full annotation, with ``Annotated`` metadata.
    full_annotation: Any = None

    def is_required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None

    def get_default(self) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        return copy.copy(self.default)


def Field(  # pydantic's names
    default: Any = _MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    description: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
) -> Any:
    return FieldInfo(default, default_factory, description, ge, gt, le)


@dataclass(frozen=True, slots=True)
class _Private:
    default_factory: Callable[[], Any]


def PrivateAttr(default_factory: Callable[[], Any]) -> Any:
    """An instance attribute outside the fields: neither validated nor dumped."""
    return _Private(default_factory)


def ConfigDict(
    *, extra: Literal["forbid", "allow", "ignore"] = "ignore", validate_assignment: bool = False
) -> dict[str, Any]:
    return {"extra": extra, "validate_assignment": validate_assignment}


def field_validator(*names: str) -> Callable[[Any], Any]:
    """``@field_validator("a", "b")`` over a ``@classmethod (cls, value) -> value``."""

    def mark(method: Any) -> Any:
        target = method.__func__ if isinstance(method, classmethod) else method
        target.__crio_field_validator__ = names
        return method

    return mark


def model_validator(*, mode: Literal["after"]) -> Callable[[Any], Any]:
    """``@model_validator(mode="after")`` over a method ``(self) -> self``."""

    def mark(method: Any) -> Any:
        method.__crio_model_validator__ = mode
        return method

    return mark


class ValidationError(ValueError):
    """Every problem found in one input, as pydantic reports them."""

    def __init__(self, title: str, problems: list[dict[str, Any]]) -> None:
        self.title = title
        self._problems = problems
        lines = [f"{len(problems)} validation error(s) for {title}"]
        for problem in problems:
            where = ".".join(str(part) for part in problem["loc"]) or title
            lines.append(f"{where}: {problem['msg']} [type={problem['type']}]")
        super().__init__("\n".join(lines))

    def errors(self, include_url: bool = False) -> list[dict[str, Any]]:
        return [dict(problem) for problem in self._problems]

    def error_count(self) -> int:
        return len(self._problems)


class _Invalid(Exception):
    """One problem found while validating a value (carries its pydantic error)."""

    def __init__(self, kind: str, msg: str, value: Any, loc: tuple[Any, ...] = ()) -> None:
        super().__init__(msg)
        self.problems = [{"type": kind, "loc": loc, "msg": msg, "input": value}]


class _Many(Exception):
    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(problems)
        self.problems = problems


def _within(problems: list[dict[str, Any]], loc: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [{**p, "loc": (*loc, *p["loc"])} for p in problems]


# -- values ------------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "on", "1", "t", "y"})
_FALSE = frozenset({"false", "no", "off", "0", "f", "n"})


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise _Invalid(
            "int_from_float", "Input should be a valid integer, got a number with a "
            "fractional part", value,
        )  # fmt: skip
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _Invalid(
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
                value,
            ) from None
    raise _Invalid("int_type", "Input should be a valid integer", value)


def _float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _Invalid(
                "float_parsing",
                "Input should be a valid number, unable to parse string as a number",
                value,
            ) from None
    raise _Invalid("float_type", "Input should be a valid number", value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Invalid(
        "bool_parsing" if isinstance(value, str) else "bool_type",
        "Input should be a valid boolean"
        + (", unable to interpret input" if isinstance(value, str) else ""),
        value,
    )


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid("string_type", "Input should be a valid string", value)


def _choice(choices: tuple[Any, ...]) -> Callable[[Any], Any]:
    quoted = [repr(c) for c in choices]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"

    def check(value: Any) -> Any:
        if value in choices:
            return value
        raise _Invalid("literal_error", f"Input should be {listed}", value)

    return check


def _bounds(info: FieldInfo) -> Callable[[Any], Any] | None:
    if info.ge is None and info.gt is None and info.le is None:
        return None

    def check(value: Any) -> Any:
        if info.ge is not None and value < info.ge:
            raise _Invalid(
                "greater_than_equal", f"Input should be greater than or equal to {info.ge}", value
            )
        if info.gt is not None and value <= info.gt:
            raise _Invalid("greater_than", f"Input should be greater than {info.gt}", value)
        if info.le is not None and value > info.le:
            raise _Invalid(
                "less_than_equal", f"Input should be less than or equal to {info.le}", value
            )
        return value

    return check


def _value_error(func: Callable[[Any], Any], value: Any) -> Any:
    try:
        return func(value)
    except (ValueError, AssertionError) as exc:
        raise _Invalid("value_error", f"Value error, {exc}", value) from None


def _validator(annotation: Any) -> Callable[[Any], Any]:
    """A function validating (and converting) one value of type ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        base = _validator(inner)
        after = [m.func for m in metadata if isinstance(m, AfterValidator)]

        def annotated(value: Any) -> Any:
            value = base(value)
            for func in after:
                value = _value_error(func, value)
            return value

        return annotated
    if origin is Literal:
        return _choice(typing.get_args(annotation))
    if origin is list:
        (item_type,) = typing.get_args(annotation) or (Any,)
        return _sequence(_validator(item_type))
    if origin is dict:
        _, value_type = typing.get_args(annotation) or (str, Any)
        return _mapping(_validator(value_type))
    if origin in (typing.Union, types.UnionType):
        return _union([_validator(a) for a in typing.get_args(annotation)], annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation._from_input
    simple = {int: _int, float: _float, bool: _bool, str: _str}
    if annotation in simple:
        return simple[annotation]
    if annotation is type(None):
        return _none
    if annotation is Any:
        return lambda value: value
    raise TypeError(f"crio._model cannot validate {annotation!r}")


def _none(value: Any) -> None:
    if value is None:
        return None
    raise _Invalid("none_required", "Input should be None", value)


def _union(options: list[Callable[[Any], Any]], annotation: Any) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        problems: list[dict[str, Any]] = []
        for option in options:
            try:
                return option(value)
            except (_Invalid, _Many) as exc:
                problems.extend(exc.problems)
        raise _Many(problems)

    return check


def _sequence(item: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise _Invalid("list_type", "Input should be a valid list", value)
        out, problems = [], []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except (_Invalid, _Many) as exc:
                problems.extend(_within(exc.problems, (index,)))
        if problems:
            raise _Many(problems)
        return out

    return check


def _mapping(item: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _Invalid("dict_type", "Input should be a valid dictionary", value)
        out, problems = {}, []
        for key, element in value.items():
            try:
                out[_str(key)] = item(element)
            except (_Invalid, _Many) as exc:
                problems.extend(_within(exc.problems, (key,)))
        if problems:
            raise _Many(problems)
        return out

    return check


# -- models ------------------------------------------------------------------------------


def _dump(value: Any, json_mode: bool) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json" if json_mode else "python")
    if isinstance(value, Mapping):
        return {k: _dump(v, json_mode) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_dump(v, json_mode) for v in value]
        return items if json_mode or isinstance(value, list) else tuple(items)
    return value


class BaseModel:
    """A table: fields declared as annotated class attributes, validated on creation."""

    model_config: ClassVar[dict[str, Any]] = {}
    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _checks: ClassVar[dict[str, Callable[[Any], Any]]] = {}
    _field_validators: ClassVar[dict[str, list[Any]]] = {}
    _model_validators: ClassVar[list[Any]] = []
    _privates: ClassVar[dict[str, _Private]] = {}

    __slots__ = ("__dict__", "_extra", "_private")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: dict[str, FieldInfo] = {}
        privates: dict[str, _Private] = {}
        for base in reversed(cls.__mro__[1:]):
            fields.update(getattr(base, "model_fields", {}))
            privates.update(getattr(base, "_privates", {}))
        for name in inspect.get_annotations(cls):
            if typing.get_origin(hints[name]) is ClassVar or name == "model_config":
                continue
            declared = cls.__dict__.get(name, _MISSING)
            if name.startswith("_"):
                if isinstance(declared, _Private):
                    privates[name] = declared
                    delattr(cls, name)
                continue
            info = declared if isinstance(declared, FieldInfo) else FieldInfo(default=declared)
            info.full_annotation = hints[name]
            info.annotation = _bare(hints[name])
            fields[name] = info
            if name in cls.__dict__:
                delattr(cls, name)
        cls.model_fields = fields
        cls._privates = privates
        cls._checks = {name: _field_check(info) for name, info in fields.items()}
        cls._field_validators = _collect_field_validators(cls, fields)
        cls._model_validators = [
            value
            for klass in reversed(cls.__mro__)
            for value in vars(klass).values()
            if getattr(value, "__crio_model_validator__", None) == "after"
        ]

    def __init__(self, **data: Any) -> None:
        type(self)._validate_into(self, data)

    # -- validation ----------------------------------------------------------------------

    @classmethod
    def model_validate(cls, data: Any) -> Any:
        """A model from ``data`` (a mapping, or an instance taken as it is)."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise ValidationError(
                cls.__name__,
                [{"type": "model_type", "loc": (), "msg": f"Input should be a valid "
                  f"dictionary or instance of {cls.__name__}", "input": data}],
            )  # fmt: skip
        model = cls.__new__(cls)
        cls._validate_into(model, data)
        return model

    @classmethod
    def _from_input(cls, value: Any) -> Any:
        """Validator of a nested table: problems carry their place inside it."""
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise _Many(exc.errors()) from None

    @classmethod
    def _validate_into(cls, model: BaseModel, data: Mapping[str, Any]) -> None:
        values: dict[str, Any] = {}
        problems: list[dict[str, Any]] = []
        for name, info in cls.model_fields.items():
            if name not in data:
                if info.is_required():
                    problems.append(
                        {"type": "missing", "loc": (name,), "msg": "Field required",
                         "input": dict(data)}
                    )  # fmt: skip
                else:
                    values[name] = info.get_default()
                continue
            try:
                values[name] = cls._field(name, data[name])
            except (_Invalid, _Many) as exc:
                problems.extend(_within(exc.problems, (name,)))
        extra = {k: v for k, v in data.items() if k not in cls.model_fields}
        mode = cls.model_config.get("extra", "ignore")
        if extra and mode == "forbid":
            problems.extend(
                {"type": "extra_forbidden", "loc": (k,), "msg": "Extra inputs are not permitted",
                 "input": v}
                for k, v in extra.items()
            )  # fmt: skip
        if problems:
            raise ValidationError(cls.__name__, problems)
        object.__setattr__(model, "__dict__", values)
        object.__setattr__(model, "_extra", dict(extra) if mode == "allow" else None)
        object.__setattr__(
            model, "_private", {n: p.default_factory() for n, p in cls._privates.items()}
        )
        cls._check_model(model, data)

    @classmethod
    def _field(cls, name: str, value: Any) -> Any:
        value = cls._checks[name](value)
        for validator in cls._field_validators.get(name, ()):
            value = _value_error(lambda v, f=validator: f(cls, v), value)
        return value

    @classmethod
    def _check_model(cls, model: BaseModel, data: Any) -> None:
        for validator in cls._model_validators:
            try:
                validator(model)
            except (ValueError, AssertionError) as exc:
                raise ValidationError(
                    cls.__name__,
                    [{"type": "value_error", "loc": (), "msg": f"Value error, {exc}",
                      "input": data}],
                ) from None  # fmt: skip

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        if name in cls._privates:
            self._private[name] = value
            return
        if name not in cls.model_fields:
            raise AttributeError(f"{cls.__name__} has no field {name!r}")
        if not cls.model_config.get("validate_assignment"):
            self.__dict__[name] = value
            return
        try:
            checked = cls._field(name, value)
        except (_Invalid, _Many) as exc:
            raise ValidationError(cls.__name__, _within(exc.problems, (name,))) from None
        previous = self.__dict__[name]
        self.__dict__[name] = checked
        try:
            cls._check_model(self, self.__dict__)
        except ValidationError:
            self.__dict__[name] = previous
            raise

    def __getattr__(self, name: str) -> Any:
        # Only called for what is not a field: a private attribute, or an extra key.
        private = object.__getattribute__(self, "_private")
        if name in private:
            return private[name]
        extra = object.__getattribute__(self, "_extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- what pydantic models offer --------------------------------------------------------

    @property
    def model_extra(self) -> dict[str, Any] | None:
        return self._extra

    def model_dump(self, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        json_mode = mode == "json"
        out = {name: _dump(value, json_mode) for name, value in self.__dict__.items()}
        out.update({k: _dump(v, json_mode) for k, v in (self._extra or {}).items()})
        return out

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return (self.__dict__, self._extra, self._private) == (
            other.__dict__,
            other._extra,
            other._private,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        items = [f"{k}={v!r}" for k, v in self.__dict__.items()]
        items += [f"{k}={v!r}" for k, v in (self._extra or {}).items()]
        return f"{type(self).__name__}({', '.join(items)})"

    def __copy__(self) -> BaseModel:
        clone = type(self).__new__(type(self))
        object.__setattr__(clone, "__dict__", dict(self.__dict__))
        object.__setattr__(clone, "_extra", None if self._extra is None else dict(self._extra))
        object.__setattr__(clone, "_private", dict(self._private))
        return clone


def _bare(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    return annotation


def _field_check(info: FieldInfo) -> Callable[[Any], Any]:
    base = _validator(info.full_annotation)
    bounds = _bounds(info)
    if bounds is None:
        return base
    return lambda value: bounds(base(value))


def _collect_field_validators(cls: type, fields: Mapping[str, FieldInfo]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            func = value.__func__ if isinstance(value, classmethod) else value
            for name in getattr(func, "__crio_field_validator__", ()):
                if name not in fields:
                    raise TypeError(f"{cls.__name__}: a validator names no field {name!r}")
                found.setdefault(name, []).append(func)
    return found


# Keep dataclasses' ``field`` out of the public namespace of this module's users.
del field
