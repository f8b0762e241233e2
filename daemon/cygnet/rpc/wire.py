"""Decoding requests so that bad bytes get INVALID_ARGUMENT naming the field.

protobuf refuses a string field that is not UTF-8 with a DecodeError that does
not say which field; gRPC would then answer UNKNOWN. We walk the wire format
with the message descriptor to name the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from cygnet.errors import InvalidArgument


def varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it; ValueError if cut short or over-long."""
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def bad_utf8_field(descriptor: Descriptor, data: bytes, prefix: str = "") -> str | None:
    """The dotted path of the first string field in `data` that is not valid UTF-8."""
    pos = 0
    try:
        while pos < len(data):
            key, pos = varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                length, pos = varint(data, pos)
                chunk, pos = data[pos:pos + length], pos + length
                found = _check_chunk(descriptor.fields_by_number.get(number), chunk, prefix)
                if found:
                    return found
            else:
                return None
    except ValueError:
        return None
    return None


def _check_chunk(field: FieldDescriptor | None, chunk: bytes, prefix: str) -> str | None:
    if field is None:
        return None
    path = f"{prefix}{field.name}"
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            return path
    elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        return bad_utf8_field(field.message_type, chunk, f"{path}.")
    return None


def decode(deserializer: Callable[[bytes], Any], raw: bytes) -> Any:
    """Runs the generated deserializer; bad input becomes InvalidArgument with the field."""
    try:
        return deserializer(raw)
    except DecodeError as exc:
        message_class = getattr(deserializer, "__self__", None)
        descriptor = getattr(message_class, "DESCRIPTOR", None)
        field = bad_utf8_field(descriptor, raw) if descriptor is not None else None
        if field:
            raise InvalidArgument(field, "must be valid UTF-8") from exc
        raise InvalidArgument("request", f"could not be decoded: {exc}") from exc
