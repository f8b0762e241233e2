"""What every compared method shares: the source database of one size and one copy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from benchmarks.compare.plain import PlainCluster


@dataclass
class Source:
    """The same pgbench database, loaded once into Cygnet and once into the plain cluster."""

    label: str  # the nominal size, e.g. "100MB"
    megabytes: int
    scale: int
    cygnet_db: str  # database name in cygnetd; its main branch holds the data
    plain: PlainCluster  # holds the data in database PLAIN_DB
    database_bytes: int  # pg_database_size of the loaded database


PLAIN_DB = "bench"


@dataclass
class Copy:
    """One copy, ready for queries: how long it took and how to get rid of it."""

    seconds: float
    drop: Callable[[], None]
    conninfo: str  # a superuser connection to the copy, for its CHECKPOINT
    # Phase timings and per-dataset sizes, kept in the JSON samples.
    detail: dict[str, float | int] = field(default_factory=dict)


class Method(Protocol):
    key: str  # stable id in the JSON, e.g. "createdb_file_copy"
    label: str  # what the chart and table show, with the version used

    def copy(self, source: Source, index: int) -> Copy: ...
