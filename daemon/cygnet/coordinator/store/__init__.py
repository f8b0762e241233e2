"""State stores: `open_store("sqlite:///path")` or `open_store("postgresql://...")`."""

from __future__ import annotations

from pathlib import Path

from cygnet.coordinator.store.sql import SqlStore
from cygnet.errors import InvalidArgument


def open_store(url: str) -> SqlStore:
    if url.startswith(("postgresql://", "postgres://")):
        from cygnet.coordinator.store.postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith("sqlite:///"):
        from cygnet.coordinator.store.sqlite import SqliteStore

        return SqliteStore(Path(url.removeprefix("sqlite://")))
    raise InvalidArgument("store", f"{url!r}: use sqlite:///PATH or postgresql://...")


__all__ = ["SqlStore", "open_store"]
