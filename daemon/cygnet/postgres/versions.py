"""Which PostgreSQL major versions are installed (Debian layout: ROOT/<major>/bin)."""

from __future__ import annotations

import os
from pathlib import Path

from cygnet.errors import InvalidArgument

DEFAULT_ROOT = Path("/usr/lib/postgresql")
# What an empty version means. Pinned, never "the newest installed": installing
# another major must not silently change what `db create` makes.
DEFAULT_VERSION = "15"
REQUIRED_BINARIES = ("postgres", "initdb", "pg_ctl")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _is_version(name: str) -> bool:
    return all(part.isdigit() for part in name.split("."))


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_BINARIES)


def installed_versions(root: Path = DEFAULT_ROOT) -> dict[str, Path]:
    """Maps each installed major version ("15") to its bin dir, oldest first.

    A version counts only if its bin dir has executable postgres, initdb and pg_ctl.
    """
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return {}
    found = {
        entry.name: entry / "bin"
        for entry in entries
        if _is_version(entry.name) and _has_binaries(entry / "bin")
    }
    return {v: found[v] for v in sorted(found, key=_version_key)}


def resolve_version(requested: str, root: Path = DEFAULT_ROOT,
                    default: str = DEFAULT_VERSION) -> tuple[str, Path]:
    """Returns (major version, bin dir) for `requested`; "" means `default`.

    Raises InvalidArgument("postgres_version", ...) naming the available versions.
    """
    versions = installed_versions(root)
    available = ", ".join(versions) or "none"
    if not versions:
        raise InvalidArgument("postgres_version", "no PostgreSQL is installed on this host")
    if not requested:
        if default not in versions:
            raise InvalidArgument(
                "postgres_version",
                f"the default PostgreSQL {default} is not installed on this host; "
                f"ask for one of {available} or set default_postgres_version")
        return default, versions[default]
    if requested not in versions:
        shown = requested if _is_version(requested) else repr(requested)
        raise InvalidArgument(
            "postgres_version",
            f"PostgreSQL {shown} is not installed on this host; available: {available}",
        )
    return requested, versions[requested]
