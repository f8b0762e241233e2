"""Daemon settings: a dataclass of defaults, then a TOML file, then command-line values."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cygnet.errors import InvalidArgument

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    T = TypeVar("T", bound=DataclassInstance)
else:
    T = TypeVar("T")


def load_settings(defaults: T, path: Path | None, overrides: Mapping[str, Any], *,
                  paths: frozenset[str] = frozenset(), floats: frozenset[str] = frozenset(),
                  tuples: frozenset[str] = frozenset()) -> T:
    """`defaults` <- TOML file at `path` <- `overrides` (None values are ignored).

    Unknown names and unreadable files are InvalidArgument("config", ...);
    the named fields are converted to Path (empty: None), float or tuple.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values.update(tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidArgument("config", f"{path}: {exc}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - {f.name for f in fields(defaults)})
    if unknown:
        raise InvalidArgument("config", f"unknown settings: {', '.join(unknown)}")
    try:
        for key in paths & values.keys():
            values[key] = Path(values[key]) if values[key] else None
        for key in floats & values.keys():
            values[key] = float(values[key])
        for key in tuples & values.keys():
            values[key] = tuple(values[key])
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("config", f"a setting has the wrong type: {exc}") from exc
    return replace(defaults, **values)
