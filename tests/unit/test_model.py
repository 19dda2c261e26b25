"""crio._model: the typed tables crio.toml is validated with (pydantic's API, lax mode)."""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import pytest

from crio._model import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    return value


Path = Annotated[str, AfterValidator(_absolute)]


class Inner(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    kind: str = Field("oci", description="A word.")
    paths: list[Path] = Field(default_factory=list)

    @field_validator("kind")
    @classmethod
    def _lowercase(cls, value: str) -> str:
        if value != value.lower():
            raise ValueError("must be lowercase")
        return value


class Outer(BaseModel):
    """The outer table."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    port: int = Field(0, ge=0, le=65535, description="A port.")
    size: int = Field(1, gt=0)
    ratio: float = 0.5
    enabled: bool = False
    mode: Literal["cgroupfs", "systemd"] = "cgroupfs"
    name: str = ""
    inner: Inner = Field(default_factory=Inner)
    tables: dict[str, Inner] = Field(default_factory=dict)
    maybe: int | None = None
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _size_fits_port(self) -> Outer:
        if self.port and self.size > self.port:
            raise ValueError("size: larger than port")
        return self


def errors(data: dict[str, Any]) -> list[tuple[str, tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    return [(e["type"], e["loc"], e["msg"]) for e in info.value.errors(include_url=False)]


def test_defaults_fields_and_descriptions() -> None:
    outer = Outer()
    assert (outer.port, outer.enabled, outer.mode, outer.inner.kind) == (
        0,
        False,
        "cgroupfs",
        "oci",
    )
    assert list(Outer.model_fields)[:3] == ["port", "size", "ratio"]
    assert Outer.model_fields["port"].description == "A port."
    assert Outer.model_fields["inner"].annotation is Inner
    assert Outer().inner is not Outer().inner  # factories run per instance
    assert Outer.__doc__ == "The outer table."


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"port": "80"}, {"port": 80}),
        ({"port": 80.0}, {"port": 80}),
        ({"enabled": "yes"}, {"enabled": True}),
        ({"enabled": 0}, {"enabled": False}),
        ({"ratio": 2}, {"ratio": 2.0}),
        ({"maybe": None}, {"maybe": None}),
        ({"maybe": "7"}, {"maybe": 7}),
        ({"tables": {"a": {"kind": "vm"}}}, {"tables": {"a": Inner(kind="vm")}}),
        ({"inner": {"paths": ("/a", "/b")}}, {"inner": Inner(paths=["/a", "/b"])}),
    ],
)
def test_lax_conversions(data: dict[str, Any], expected: dict[str, Any]) -> None:
    model = Outer.model_validate(data)
    for name, value in expected.items():
        assert getattr(model, name) == value


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"port": "abc"}, ("int_parsing", ("port",), "unable to parse string as an integer")),
        ({"port": 1.5}, ("int_from_float", ("port",), "fractional part")),
        ({"port": 70000}, ("less_than_equal", ("port",), "less than or equal to 65535")),
        ({"port": -1}, ("greater_than_equal", ("port",), "greater than or equal to 0")),
        ({"size": 0}, ("greater_than", ("size",), "greater than 0")),
        ({"enabled": "maybe"}, ("bool_parsing", ("enabled",), "valid boolean")),
        ({"mode": "v3"}, ("literal_error", ("mode",), "Input should be 'cgroupfs' or 'systemd'")),
        ({"name": 5}, ("string_type", ("name",), "valid string")),
        ({"inner": {"paths": 5}}, ("list_type", ("inner", "paths"), "valid list")),
        ({"inner": {"paths": ["rel"]}}, ("value_error", ("inner", "paths", 0), "absolute path")),
        ({"inner": {"kind": "OCI"}}, ("value_error", ("inner", "kind"), "Value error, must be")),
        ({"tables": {"x": {"kind": 1}}}, ("string_type", ("tables", "x", "kind"), "string")),
        ({"tables": 3}, ("dict_type", ("tables",), "valid dictionary")),
        ({"bogus": 1}, ("extra_forbidden", ("bogus",), "Extra inputs are not permitted")),
        ({"port": 10, "size": 20}, ("value_error", (), "Value error, size: larger than port")),
    ],
)
def test_errors_have_pydantics_types_places_and_messages(
    data: dict[str, Any], problem: tuple[str, tuple[Any, ...], str]
) -> None:
    kind, loc, fragment = problem
    [(got_kind, got_loc, message)] = errors(data)
    assert (got_kind, got_loc) == (kind, loc)
    assert fragment in message


def test_every_problem_is_reported_in_field_order_and_the_input_is_kept() -> None:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate({"name": 1, "port": "x", "bogus": True})
    found = info.value.errors()
    assert [e["loc"] for e in found] == [("port",), ("name",), ("bogus",)]
    assert [e["input"] for e in found] == ["x", 1, True]
    assert info.value.error_count() == 3


def test_extra_keys_are_kept_where_allowed() -> None:
    inner = Inner.model_validate({"kind": "vm", "accel": "tcg", "memory": 512})
    assert inner.model_extra == {"accel": "tcg", "memory": 512}
    assert inner.accel == "tcg"
    assert inner.model_dump() == {"kind": "vm", "paths": [], "accel": "tcg", "memory": 512}
    assert Outer().model_extra is None


def test_assignment_is_validated_and_a_failed_one_changes_nothing() -> None:
    outer = Outer(port=100)
    outer.port = "200"  # type: ignore[assignment]
    assert outer.port == 200
    with pytest.raises(ValidationError, match="less than or equal"):
        outer.port = 70000
    with pytest.raises(ValidationError, match="larger than port"):
        outer.size = 300  # the model check runs again
    assert (outer.port, outer.size) == (200, 1)
    with pytest.raises(AttributeError):
        outer.nope = 1  # type: ignore[attr-defined]


def test_private_attributes_dump_equality_and_copies() -> None:
    a = Outer.model_validate({"tables": {"t": {"kind": "x", "more": True}}})
    b = Outer.model_validate({"tables": {"t": {"kind": "x", "more": True}}})
    assert a == b and a._origins == {}
    b._origins = {"crio.root": "file"}
    assert b._origins == {"crio.root": "file"} and a != b
    assert "_origins" not in b.model_dump()
    dumped = a.model_dump(mode="json")
    assert dumped["tables"] == {"t": {"kind": "x", "paths": [], "more": True}}
    assert Outer.model_validate(dumped) == a
    clone = copy.copy(a)
    assert clone == a and clone is not a
    assert Outer.model_validate(a) is a  # an instance is taken as it is


def test_required_fields_and_non_mappings() -> None:
    class Needs(BaseModel):
        value: int

    with pytest.raises(ValidationError) as info:
        Needs.model_validate({})
    assert info.value.errors()[0]["type"] == "missing"
    with pytest.raises(ValidationError) as info:
        Needs.model_validate([1])
    assert info.value.errors()[0]["type"] == "model_type"
    assert Needs(value="3").value == 3  # type: ignore[arg-type]


def test_a_validator_for_an_unknown_field_is_a_bug() -> None:
    with pytest.raises(TypeError, match="nope"):

        class Broken(BaseModel):
            value: int = 0

            @field_validator("nope")
            @classmethod
            def _check(cls, value: int) -> int:
                return value
