"""The idle suspender: a running branch with no client connections for its
idle timeout (`cygnet:suspend-after`, else the host's `suspend_after`) is
suspended (agent/scale.py).

Clients are counted from /proc, not with SQL: a round reads the postmaster's
children list and each child's process title, so it opens no connection,
forks no backend and costs a few file reads per *running* branch; suspended
and stopped branches cost nothing. Postgres titles its processes
`postgres: USER DATABASE HOST(PORT) ACTIVITY` (or `[local]` for the unix
socket) for client backends and walsenders (`walsender USER HOST(PORT)`),
and `postgres: checkpointer`, `postgres: io worker 0`, ... for its own
processes; anything titled like a connection counts as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cygnet.agent import layout as L
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord
from cygnet.postgres.procfs import PROC
from cygnet.states import Desired

if TYPE_CHECKING:  # scale.py imports the helpers below
    from cygnet.agent.scale import Scaler

log = logging.getLogger("cygnet.agent")

# `postgres: [CLUSTER_NAME: ]USER DATABASE HOST(PORT)|[local] ...`; a walsender
# for a physical replica has no database (`walsender USER HOST(PORT)`), which the
# same pattern matches with `walsender` in the user's place.
_CONNECTION = re.compile(
    r"^postgres: (?:\S+: )?(?P<first>\S+) \S+ (?:\[local\]|\S*\(\d+\))(?: |$)")


@dataclass(frozen=True)
class Backends:
    clients: int  # client backends and walsenders
    walsenders: int  # replicas (physical or logical) attached


def backends(postmaster_pid: int) -> Backends:
    """Connections of one postmaster, from its children's process titles."""
    # Plain open(): pathlib's objects cost twice the reads themselves here.
    try:
        with open(f"{PROC}/{postmaster_pid}/task/{postmaster_pid}/children", "rb") as f:
            children = f.read().split()
    except OSError:
        return Backends(0, 0)
    clients = walsenders = 0
    for child in children:
        try:
            with open(f"{PROC}/{child.decode()}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue  # exited meanwhile
        kind = connection_kind(raw.replace(b"\0", b" ").decode("utf-8", "replace").strip())
        clients += kind is not None
        walsenders += kind == "walsender"
    return Backends(clients, walsenders)


def connection_kind(title: str) -> str | None:
    """`client` or `walsender` for a process titled as a connection; None otherwise."""
    match = _CONNECTION.match(title)
    if match is None:
        return None
    return "walsender" if match["first"] == "walsender" else "client"


def wal_to_archive(pgdata: Path) -> int:
    """WAL segments Postgres has still to archive (`.ready` in archive_status)."""
    try:
        with os.scandir(pgdata / "pg_wal" / "archive_status") as entries:
            return sum(1 for e in entries if e.name.endswith(".ready"))
    except OSError:
        return 0


def timeout_of(branch: BranchRecord, default: float) -> float:
    """Seconds idle before `branch` is suspended; 0 means never."""
    return float(branch.suspend_after) if branch.suspend_after >= 0 else max(default, 0.0)


class IdleSuspender:
    """Watches running branches and suspends those idle past their timeout."""

    def __init__(self, host: Host, scaler: Scaler) -> None:
        self.host = host
        self.scaler = scaler
        # Since when each running branch has been seen without a client (monotonic).
        self._idle_since: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_once()
            except Exception:
                log.exception("idle check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.host.config.idle_check_interval)

    async def check_once(self) -> None:
        now = time.monotonic()
        seen: set[str] = set()
        default = self.host.config.suspend_after
        for db in list(self.host.known.values()):
            if db.phase != L.PHASE_READY or self.host.db_locks[db.id].locked():
                continue  # an operation is changing it; look next round
            for branch in list(db.branches.values()):
                timeout = timeout_of(branch, default)
                if branch.phase != L.PHASE_READY or branch.desired != Desired.RUNNING \
                        or timeout <= 0:
                    continue
                live = self.host.clusters.live(branch)
                if live is None:
                    continue
                seen.add(branch.id)
                if backends(live.pid).clients:
                    self._idle_since[branch.id] = now
                    continue
                # A wake counts as activity: its client may be about to connect.
                since = max(self._idle_since.setdefault(branch.id, now),
                            self.scaler.last_activity(branch.id))
                if now - since >= timeout:
                    await self.scaler.suspend_idle(db.id, branch.id, timeout)
        for gone in set(self._idle_since) - seen:
            del self._idle_since[gone]
