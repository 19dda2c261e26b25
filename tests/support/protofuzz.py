"""Hypothesis strategies for protobuf messages: generated from the descriptors, or mutated.

``messages(cls)`` builds any message of a class, field by field from its
descriptor, with hostile values mixed in: huge strings, ``..`` paths, NUL
bytes, right-to-left marks, bytes that are not UTF-8, the extremes of every
integer type and values just past them where the wire allows it, unknown
enum numbers, large maps and long lists, nesting to the depth the schema
allows. ``mutated(template)`` keeps a valid message and replaces one field
somewhere inside it with such a value. ``wire_garbage(template)`` breaks the
encoded bytes themselves (flips, cuts, a string field holding invalid UTF-8).
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

__all__ = ["HOSTILE_STRINGS", "messages", "mutated", "wire_garbage"]

F = FieldDescriptor

HOSTILE_STRINGS = (
    "",
    " ",
    ".",
    "..",
    "/",
    "../../../../../../etc/passwd",
    "/../../../../tmp",
    "a/../../b",
    "x\x00y",
    "\x00",
    "%s%n%x",
    "$(reboot)",
    "\u202egnp.exe",
    "🦄" * 40,
    "-1",
    "sha256:",
    "sha256:" + "0" * 64,
    "k8s_POD_a_b_c_0",
    "*",
    "/proc/self/root",
    "\\",
    "\n\r\t",
)

_INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


#: Huge strings only this close to the top of a message: deeper, they multiply (a few
#: nested lists of a few messages with several 1 MiB strings each is gigabytes).
HUGE_DEPTH = 4


def strings(extra: tuple[str, ...] = (), huge: bool = True) -> st.SearchStrategy[str]:
    """Short text, hostile strings, the caller's valid values, and (``huge``) huge strings."""
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
    choices = [text, st.sampled_from(HOSTILE_STRINGS)]
    if huge:
        choices.append(
            st.builds(
                lambda char, size: char * size,
                st.sampled_from(["a", "/", ".", "é"]),
                st.sampled_from([255, 4097, 65_537, 1 << 20]),
            )
        )
    if extra:
        choices.insert(0, st.sampled_from(extra))
    return st.one_of(*choices)


def _scalar(
    field: FieldDescriptor, extra: tuple[str, ...], huge: bool = False
) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_STRING:
        return strings(extra, huge)
    if kind == F.TYPE_BYTES:
        return st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\x80" * 100, b"\x00" * 4096]),
        )
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if kind == F.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        # proto3 enums are open: an unknown number travels as is.
        return st.one_of(st.sampled_from(numbers), st.integers(-(2**31), 2**31 - 1))
    low, high = _INT_RANGES[kind]
    edges = sorted({v for v in (low, high, -1, 0, 1, 2**31, 2**32) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


@functools.cache
def _message(descriptor: Descriptor, depth: int, extra: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """A dict of field name -> value (not yet a message: descriptors are hashable, messages not)."""
    if depth <= 0:
        return st.just({})
    fields = {}
    for field in descriptor.fields:
        fields[field.name] = _field(field, depth, extra)
    return st.fixed_dictionaries({}, optional=fields)


def _value(field: FieldDescriptor, depth: int, extra: tuple[str, ...]) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return _message(field.message_type, depth - 1, extra)
    return _scalar(field, extra, huge=depth >= HUGE_DEPTH)


def _field(field: FieldDescriptor, depth: int, extra: tuple[str, ...]) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = _scalar(field.message_type.fields_by_name["key"], extra, huge=depth >= HUGE_DEPTH)
        value = _value(field.message_type.fields_by_name["value"], depth, extra)
        small = st.dictionaries(key, value, max_size=6)
        big = st.builds(lambda n: {f"k{i}": "v" * (i % 7) for i in range(n)}, st.just(5000))
        if field.message_type.fields_by_name["value"].type == F.TYPE_STRING:
            return st.one_of(small, big)
        return small
    value = _value(field, depth, extra)
    if not field.is_repeated:
        return value
    if field.type == F.TYPE_MESSAGE:
        return st.lists(value, max_size=2)
    # A long list of small values (a long list of huge ones would only measure our memory).
    small = st.text(max_size=4) if field.type == F.TYPE_STRING else _scalar(field, ())
    return st.one_of(st.lists(value, max_size=4), st.lists(small, min_size=300, max_size=300))


def _fill(message: Message, values: dict[str, Any]) -> Message:
    descriptor = message.DESCRIPTOR
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if value_field.type == F.TYPE_MESSAGE:
                    _fill(target[key], item)
                else:
                    target[key] = item
        elif field.is_repeated:
            for item in value:
                if field.type == F.TYPE_MESSAGE:
                    _fill(target.add(), item)
                else:
                    target.append(item)
        elif field.type == F.TYPE_MESSAGE:
            target.SetInParent()
            _fill(target, value)
        else:
            setattr(message, name, value)
    return message


def messages(
    cls: type[Message], depth: int = 5, valid: tuple[str, ...] = ()
) -> st.SearchStrategy[Message]:
    """Any message of ``cls``; string fields also draw from ``valid`` (real ids, names)."""
    return _message(cls.DESCRIPTOR, depth, valid).map(lambda values: _fill(cls(), values))


@st.composite
def mutated(draw: Any, template: Message, valid: tuple[str, ...] = ()) -> Message:
    """``template`` with one field, at any depth, replaced by a generated value (or cleared)."""
    message = type(template)()
    message.CopyFrom(template)
    target = message
    if not target.DESCRIPTOR.fields:
        return message  # nothing to mutate: the bytes can still be broken (wire_garbage)
    while True:
        fields = list(target.DESCRIPTOR.fields)
        field = draw(st.sampled_from(fields))
        singular_message = (
            field.type == F.TYPE_MESSAGE and not field.is_repeated and target.HasField(field.name)
        )
        if singular_message and draw(st.booleans()):
            target = getattr(target, field.name)  # go one level deeper
            continue
        break
    target.ClearField(field.name)
    if draw(st.integers(0, 5)) > 0:
        _fill(target, {field.name: draw(_field(field, HUGE_DEPTH, valid))})
    return message


@st.composite
def wire_garbage(draw: Any, template: Message) -> bytes:
    """The encoding of ``template`` broken: bytes flipped, cut short, or invalid UTF-8 in a
    string field (which a protobuf decoder must refuse)."""
    data = bytearray(template.SerializeToString())
    how = draw(st.sampled_from(["flip", "cut", "append", "utf8"]))
    if how == "flip" and data:
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    elif how == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    else:
        strings = [f for f in template.DESCRIPTOR.fields if f.type == F.TYPE_STRING]
        if strings:
            field = draw(st.sampled_from(strings))
            payload = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80b"]))
            tag = (field.number << 3) | 2
            data += _varint(tag) + _varint(len(payload)) + payload
    return bytes(data)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
