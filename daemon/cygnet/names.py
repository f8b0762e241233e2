"""Validation of human names for databases, branches and snapshots.

Names are stored in ZFS user properties and shown to people; they never become
part of a dataset name, a path or a command line. Still, they must be printable
and unambiguous in `DB/BRANCH` notation.
"""

from __future__ import annotations

import unicodedata

from cygnet.errors import InvalidArgument

MAX_NAME_LENGTH = 63
_FORBIDDEN_CHARS = frozenset("/@\\")


def validate_name(field: str, value: str | bytes) -> str:
    """Returns `value` as str if it is a valid name, else raises InvalidArgument for `field`."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(field, "must be valid UTF-8") from exc
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            field, f"must be at most {MAX_NAME_LENGTH} characters, got {len(value)}"
        )
    if value != value.strip():
        raise InvalidArgument(field, "must not start or end with whitespace")
    for ch in value:
        if ch in _FORBIDDEN_CHARS:
            raise InvalidArgument(field, f"must not contain {ch!r}")
        category = unicodedata.category(ch)
        if category.startswith("C"):
            # Cc control, Cf format, Cs surrogates, Co private use, Cn unassigned
            raise InvalidArgument(
                field, f"must not contain control or unassigned character U+{ord(ch):04X}"
            )
    if ".." in value:
        raise InvalidArgument(field, "must not contain '..'")
    if value in {".", "-"} or value.startswith("-"):
        raise InvalidArgument(field, "must not start with '-' or be '.'")
    return value
