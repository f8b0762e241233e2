"""Daemon settings: a dataclass of defaults, then a TOML file, then command-line values.

The dataclass's type hints are the schema: msgspec checks every value against
them (`pools = "tank"` is an error, not a tuple of letters), so a settings
dataclass is plain `name: type = default  # why` lines and nothing else.
This module is for the daemons only; the `cygnet` CLI never imports it.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from cygnet.errors import InvalidArgument

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    T = TypeVar("T", bound=DataclassInstance)
else:
    T = TypeVar("T")

# msgspec ends its messages with " - at `$.key...`".
_AT = re.compile(r" - at `\$\.?([A-Za-z0-9_]*)[^`]*`$")


def load_settings(defaults: type[T], path: Path | None, overrides: Mapping[str, Any]) -> T:
    """`defaults`'s field defaults <- TOML file at `path` <- `overrides` (None is ignored).

    Every problem is InvalidArgument naming the key and where it came from:
    an unreadable file or bad TOML, an unknown key, a value of the wrong type.
    """
    from_file = _read(path) if path is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    values = {**from_file, **given}
    known = {f.name for f in fields(defaults)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = _origin(unknown[0], path, given)
        raise InvalidArgument("config", f"unknown settings: {', '.join(unknown)} (in {where})")
    values = _empty_paths_to_none(defaults, values)
    try:
        return msgspec.convert(values, defaults, dec_hook=_decode_path)
    except msgspec.ValidationError as exc:
        key, reason = _split(str(exc))
        raise InvalidArgument(key or "config",
                              f"{reason} (in {_origin(key, path, given)})") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise InvalidArgument("config", f"{path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument("config", f"{path}: not valid TOML: {exc}") from None


def _origin(key: str, path: Path | None, given: Mapping[str, Any]) -> str:
    return "command line" if key in given or path is None else str(path)


def _split(message: str) -> tuple[str, str]:
    """("port_min", "expected int, got str") from msgspec's message."""
    match = _AT.search(message)
    if match is None:
        return "", message
    return match.group(1), message[:match.start()].replace("`", "").lower()


def _decode_path(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    # msgspec turns a TypeError into a ValidationError that names the key.
    raise TypeError(f"Expected `path (a string)`, got `{type(value).__name__}`")


def _optional_path_fields(cls: type) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {name for name, hint in hints.items()
            if isinstance(hint, types.UnionType) and set(hint.__args__) == {Path, type(None)}}


def _empty_paths_to_none(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """An empty string turns an optional path off (`backup_dir = ""`), as documented."""
    optional = _optional_path_fields(cls)
    return {k: (None if k in optional and v == "" else v) for k, v in values.items()}
