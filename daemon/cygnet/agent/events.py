"""What happened to databases and branches, for WatchEvents and webhooks.

Flows call `emit(...)` where they create, wake, suspend, expire, promote,
restore or delete something. `emit` never blocks and never raises: until the
daemon configures a sink (the event journal, agent/eventlog.py) it does
nothing, and a failing sink is logged, never passed on to the flow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger("cygnet.events")


class EventKind(StrEnum):
    CREATED = "created"
    READY = "ready"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    EXPIRED = "expired"
    DELETED = "deleted"
    FAILED = "failed"
    PROMOTED = "promoted"
    RESTORED = "restored"


@dataclass(frozen=True)
class Event:
    """One event; `cursor` orders events on a host and grows across restarts."""

    cursor: int
    time: float  # unix time
    kind: EventKind
    database_id: str
    branch_id: str = ""
    database: str = ""
    branch: str = ""
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"kind": self.kind.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(cursor=int(data["cursor"]), time=float(data["time"]),
                   kind=EventKind(data["kind"]), database_id=str(data["database_id"]),
                   branch_id=str(data.get("branch_id", "")),
                   database=str(data.get("database", "")), branch=str(data.get("branch", "")),
                   reason=str(data.get("reason", "")))


@dataclass(frozen=True)
class Draft:
    """An event before the journal gives it a cursor."""

    time: float
    kind: EventKind
    database_id: str
    branch_id: str
    database: str
    branch: str
    reason: str


# Set by the daemon once the journal is open; takes the draft without blocking.
Sink = Callable[[Draft], None]
_sink: Sink | None = None


def configure(sink: Sink | None) -> None:
    global _sink
    _sink = sink


def emit(kind: EventKind, *, database_id: str, branch_id: str = "", database: str = "",
         branch: str = "", reason: str = "") -> None:
    """Records an event; returns at once and never raises (a no-op until configured)."""
    sink = _sink
    if sink is None:
        return
    try:
        sink(Draft(time.time(), EventKind(kind), database_id, branch_id, database, branch,
                   reason[:1000]))
    except Exception:
        log.exception("event %s for %s/%s not recorded", kind, database_id, branch_id)
