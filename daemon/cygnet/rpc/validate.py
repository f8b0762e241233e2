"""One request-validation layer: every field of every request checked the same way.

The error interceptor runs `Validator.check` after decoding a request and
before its handler, so handlers see only well-formed values and every RPC
answers bad input alike: INVALID_ARGUMENT naming the field. What a field must
look like is declared per method (see requests.py), not checked in handlers;
integers out of their wire type's range are caught for every field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from cygnet.errors import InvalidArgument
from cygnet.rpc.wire import varint

# Checks a present, non-empty value of a field; raises InvalidArgument naming `path`.
Check = Callable[[str, Any], None]


def anything(path: str, value: Any) -> None:
    """For fields every value of is fine (booleans)."""


@dataclass(frozen=True)
class Rules:
    """What one method's request must look like."""

    fields: Mapping[str, Check]  # field name -> check of its value when set
    required: frozenset[str] = frozenset()
    # Rules across fields (e.g. exactly one of two), run after the field checks.
    whole: tuple[Callable[[Any], None], ...] = field(default=())


class Validator:
    def __init__(self, rules: Mapping[str, Rules]) -> None:
        self.rules = dict(rules)

    def check(self, method: str, request: Any, raw: bytes = b"") -> None:
        """Raises InvalidArgument for the first bad field of `request` (`method` is the
        full path, /package.Service/Method). Methods without rules get the range check."""
        if not isinstance(request, Message):
            return
        if raw:
            check_ranges(request.DESCRIPTOR, raw)  # type: ignore[arg-type]
        rules = self.rules.get(method)
        if rules is None:
            return
        for name, check in rules.fields.items():
            check_field(request, name, check, name in rules.required, name)
        for rule in rules.whole:
            rule(request)


def check_field(msg: Any, name: str, check: Check, required: bool, path: str) -> None:
    fd: FieldDescriptor = msg.DESCRIPTOR.fields_by_name[name]
    value = getattr(msg, name)
    if fd.is_repeated:
        if required and not value:
            raise InvalidArgument(path, "must not be empty")
        for item in value:
            check(path, item)
        return
    present = msg.HasField(name) if fd.has_presence else bool(value)
    if present:
        check(path, value)
    elif required:
        raise InvalidArgument(path, "must not be empty")


def message_check(fields: Mapping[str, Check], required: frozenset[str] = frozenset(),
                  whole: Callable[[str, Any], None] | None = None) -> Check:
    """A check of a sub-message: its own fields, named `outer.inner`."""
    def check(path: str, msg: Any) -> None:
        for name, inner in fields.items():
            check_field(msg, name, inner, name in required, f"{path}.{name}")
        if whole is not None:
            whole(path, msg)

    return check


def integer_range(low: int, high: int) -> Check:
    def check(path: str, value: Any) -> None:
        if not low <= value <= high:
            raise InvalidArgument(path, f"must be between {low} and {high}, got {value}")

    return check


def number_range(low: float, high: float) -> Check:
    """A float field between `low` and `high` (NaN is refused: it compares false)."""
    def check(path: str, value: Any) -> None:
        if not low <= value <= high:
            raise InvalidArgument(path, f"must be between {low:g} and {high:g}, got {value}")

    return check


# --- integers on the wire ---------------------------------------------------------
# protobuf truncates an over-long varint to the field's width: a -1 sent for a
# uint32 arrives as 4294967295. Read the wire value to refuse it instead.

_U32 = (FieldDescriptor.TYPE_UINT32,)
_I32 = (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM, FieldDescriptor.TYPE_SINT32)


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, varint value or length-delimited bytes) of `data`."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = varint(data, pos)
            yield number, wire_type, value
        elif wire_type == 2:
            length, pos = varint(data, pos)
            yield number, wire_type, data[pos:pos + length]
            pos += length
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            return


def _out_of_range(fd: FieldDescriptor, value: int) -> bool:
    if fd.type in _U32:
        return value >= 2**32
    if fd.type in _I32 and fd.type != FieldDescriptor.TYPE_SINT32:
        # Negative int32s travel sign-extended to 64 bits.
        return 2**31 <= value < 2**64 - 2**31
    if fd.type == FieldDescriptor.TYPE_SINT32:
        return value >= 2**32
    return False


def _range_error(descriptor: Descriptor, data: bytes, prefix: str) -> str | None:
    for number, wire_type, value in _fields(data):
        fd = descriptor.fields_by_number.get(number)
        if fd is None:
            continue
        path = f"{prefix}{fd.name}"
        if wire_type == 0 and isinstance(value, int) and _out_of_range(fd, value):
            return path
        if (wire_type == 2 and isinstance(value, bytes) and fd.message_type is not None
                and fd.type == FieldDescriptor.TYPE_MESSAGE):
            found = _range_error(fd.message_type, value, f"{path}.")
            if found:
                return found
    return None


def check_ranges(descriptor: Descriptor, raw: bytes) -> None:
    """InvalidArgument for the first integer whose wire value does not fit its field."""
    try:
        path = _range_error(descriptor, raw, "")
    except ValueError:
        return  # the decoder accepted it; nothing more to say
    if path:
        raise InvalidArgument(path, "is out of range for its type (negative or too large)")
