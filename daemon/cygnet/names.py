"""Human names and generated ids of databases, branches, snapshots and backups.

Names are stored in ZFS user properties and shown to people; they never become
part of a dataset name, a path or a command line. Still, they must be printable
and unambiguous in `DB/BRANCH` notation, and never confusable with an id: every
field that takes "an id or a name" reads an id-shaped value as an id, so a name
of that shape is refused.
"""

from __future__ import annotations

import re
import unicodedata

from cygnet.errors import InvalidArgument

MAX_NAME_LENGTH = 63
MAX_REQUEST_ID_LENGTH = 128
_FORBIDDEN_CHARS = frozenset("/@\\")

# Ids cygnetd generates: a two-letter kind and ten [a-z0-9] (layout.new_id).
ID_KINDS = {"db": "database", "br": "branch", "sn": "snapshot", "tm": "temporary image"}
ID_RE = re.compile(r"(db|br|sn|tm)[a-z0-9]{10}")
# Backup ids: creation time and a random suffix (cygnet.backup.models).
BACKUP_ID_RE = re.compile(r"[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}")
_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]+")
SHOWN_LENGTH = 40


def shown(value: str) -> str:
    """`value` quoted for an error message, cut short: input is never echoed whole."""
    if len(value) <= SHOWN_LENGTH:
        return repr(value)
    return f"{value[:SHOWN_LENGTH]!r}... ({len(value)} characters)"


def id_kind(value: str) -> str | None:
    """What `value` is the id of ("database", "backup"...), or None if it is not id-shaped."""
    if ID_RE.fullmatch(value):
        return ID_KINDS[value[:2]]
    if BACKUP_ID_RE.fullmatch(value):
        return "backup"
    return None


def is_id(value: str, prefix: str) -> bool:
    """Whether `value` has the shape of an id of kind `prefix` (db, br, sn)."""
    return ID_RE.fullmatch(value) is not None and value.startswith(prefix)


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
    kind = id_kind(value)
    if kind is not None:
        raise InvalidArgument(field, f"{shown(value)} has the shape of a {kind} id, and ids "
                              "and names must never be confused: choose another name")
    return value


def validate_reference(field: str, value: str, prefix: str) -> str:
    """An "id or name" reference to an existing object: an id of kind `prefix`, or a
    valid name. Anything else can name nothing, and is refused before any lookup."""
    if is_id(value, prefix):
        return value
    kind = id_kind(value)
    if kind is not None:
        wanted = ID_KINDS[prefix]
        raise InvalidArgument(field, f"{shown(value)} is a {kind} id, not a {wanted} id or name")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidArgument(field, f"must be an id or a name of at most {MAX_NAME_LENGTH} "
                              f"characters, got {len(value)}")
    return validate_name(field, value)


def validate_id(field: str, value: str, prefix: str) -> str:
    if not is_id(value, prefix):
        raise InvalidArgument(field, f"{shown(value)} is not a {ID_KINDS[prefix]} id")
    return value


def validate_backup_id(field: str, value: str) -> str:
    if not BACKUP_ID_RE.fullmatch(value):
        raise InvalidArgument(field, f"{shown(value)} is not a backup id")
    return value


def validate_request_id(field: str, value: str) -> str:
    """Request ids are stored in ZFS properties: printable ASCII, no spaces, bounded."""
    if len(value) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_REQUEST_ID_LENGTH} characters, "
                              f"got {len(value)}")
    if not _REQUEST_ID_RE.fullmatch(value):
        raise InvalidArgument(field, "must be printable ASCII without spaces (a UUID, say)")
    return value
