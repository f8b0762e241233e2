"""The host's lease, as Postgres' fence reads it (native/fence, docs/ha.md "Fencing").

The coordinator renews the host's lease on each heartbeat it commits; the
heartbeat's answer gives the lease TTL. The agent then writes the fence
deadline, `sent + TTL - margin`, where `sent` is when the heartbeat left
(before the coordinator recorded it, so the coordinator's expiry is later
still) and the margin covers clock rate and skew and a commit in flight.
Every replicated primary on the host loads cygnet_fence, which refuses
commits after that deadline and stops the postmaster: with cygnetd stopped or
killed too, since the deadline is a file and the check runs in Postgres.

The file holds `BOOT_ID DEADLINE_NS TTL_MS`: CLOCK_BOOTTIME nanoseconds (no
wall clock jumps) and the kernel's boot id (a file from before a reboot is
stale); the fence reads those two, and a restarted cygnetd the TTL.
It lives in run_dir, which the postgres user can read and a reboot empties.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cygnet.agent.config import AgentConfig
from cygnet.errors import FailedPrecondition

if TYPE_CHECKING:  # host.py imports clusters.py, which imports this module
    from cygnet.agent.host import Host
    from cygnet.agent.inventory import BranchRecord, DatabaseRecord

log = logging.getLogger("cygnet.agent.lease")

LEASE_FILE = "host-lease"
FAILSAFE_DIR = "failsafe"  # one deadline file per database, in run_dir
FENCED_MARKER = "cygnet_fenced"  # in PGDATA, written by cygnet_fence at the deadline
REPLICA_SLOT_PREFIX = "cygnet_replica_"
# The fence fires this share of the TTL before the coordinator's expiry.
MARGIN_SHARE = 1 / 3


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def now_ns() -> int:
    """The clock the fence compares with: CLOCK_BOOTTIME, which never jumps."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def lease_path(config: AgentConfig) -> Path:
    return config.run_dir / LEASE_FILE


def failsafe_path(config: AgentConfig, database_id: str) -> Path:
    """The database's failsafe deadline (agent/failsafe.py), beside the host's lease."""
    return config.run_dir / FAILSAFE_DIR / database_id


def deadline_for(sent_ns: int, ttl_s: float) -> int:
    """The fence deadline of a renewal sent at `sent_ns` (CLOCK_BOOTTIME)."""
    return sent_ns + int(ttl_s * (1 - MARGIN_SHARE) * 1e9)


def write_deadline(path: Path, deadline_ns: int, ttl_s: float = 0.0) -> None:
    """Atomically replaces the lease file (readable by the postgres user). The TTL
    goes third (the fence reads two fields): a restarted cygnetd knows it before
    any coordinator answers, so its failsafe rounds run during an outage too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{boot_id()} {deadline_ns} {int(ttl_s * 1000)}\n")
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _read(path: Path) -> tuple[int, float]:
    """(deadline ns, TTL s) in the file; (0, 0) when absent, malformed or from
    another boot. A file of two fields (an older cygnetd's) has no TTL."""
    try:
        boot, deadline, *rest = path.read_text().split()
        if boot != boot_id() or len(rest) > 1:
            return 0, 0.0
        return int(deadline), int(rest[0]) / 1000 if rest else 0.0
    except (OSError, ValueError):
        return 0, 0.0


def read_deadline(path: Path) -> int:
    """The deadline in the file, 0 when absent, malformed or from another boot."""
    return _read(path)[0]


def extend(path: Path, sent_ns: int, ttl_s: float) -> None:
    """The deadline of a renewal sent at `sent_ns`, unless the file's is later: a late
    answer must not move it back (answers can reorder)."""
    deadline = deadline_for(sent_ns, ttl_s)
    if deadline > read_deadline(path):
        write_deadline(path, deadline, ttl_s)


def expire(path: Path) -> None:
    """Ends the lease at once (a deadline in the past): the fence fires within 100 ms."""
    write_deadline(path, 0)


class HostLease:
    """Keeps the lease file in step with the renewals the coordinator grants."""

    def __init__(self, config: AgentConfig) -> None:
        self.path = lease_path(config)
        # The TTL the last renewal granted, in this boot (a restart keeps it).
        self.ttl = _read(self.path)[1]

    def sending(self) -> int:
        """Call just before a heartbeat leaves; pass the result to `renewed`."""
        return now_ns()

    def renewed(self, sent_ns: int, ttl_s: float) -> None:
        """A heartbeat sent at `sent_ns` was committed with a lease of `ttl_s`."""
        if ttl_s <= 0:
            return  # a coordinator without host leases: the fence stays as it is
        self.ttl = ttl_s
        extend(self.path, sent_ns, ttl_s)

    def interval(self, coordinator_interval: float) -> float:
        """How often to beat: three renewals per TTL at least, so one lost beat is no fence."""
        if self.ttl <= 0:
            return coordinator_interval
        return min(coordinator_interval, self.ttl / 3)

    def call_timeout(self, default: float) -> float:
        """A coordinator that answers nothing is left in time to renew through another."""
        return default if self.ttl <= 0 else min(default, self.ttl / 6)


def replica_slots(pgdata: Path) -> list[str]:
    """The replica slots of a cluster (from its pg_replslot directory)."""
    try:
        return [p.name for p in (pgdata / "pg_replslot").iterdir()
                if p.name.startswith(REPLICA_SLOT_PREFIX)]
    except OSError:
        return []


def replicated(pgdata: Path) -> bool:
    """A primary with a replica slot: what the fence guards (a lone primary has no
    one to fail over to, so fencing it would only take it down)."""
    return bool(replica_slots(pgdata))


def fence_file(config: AgentConfig, pgdata: Path, *, replica: bool = False) -> Path | None:
    """The lease file for a cluster's fence, or None when it runs unfenced: only in a
    fleet (a coordinator renews leases), for replicas and replicated primaries."""
    if not config.coordinator:
        return None
    return lease_path(config) if replica or replicated(pgdata) else None


def fenced(pgdata: Path) -> bool:
    return (pgdata / FENCED_MARKER).exists()


def fence_before_start(config: AgentConfig, pgdata: Path) -> bool:
    """A replicated primary found down when cygnetd starts comes up fenced: while
    both were down its host's lease may have lapsed and a failover taken the
    database, and a heartbeat that renews the lease before main starts would
    otherwise let it write. The first heartbeat lifts the fence if the
    coordinator says this host still holds the database (`lift_fences`)."""
    if fence_file(config, pgdata) is None or fenced(pgdata):
        return False
    fd = os.open(pgdata / FENCED_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.fsync(fd)
    os.close(fd)
    log.warning("%s starts fenced: a replicated primary found down waits for the "
                "coordinator's word", pgdata)
    return True


def unfence(pgdata: Path, by: str = "the coordinator") -> None:
    """Lets a fenced primary write again: only once the coordinator confirmed, after a
    renewal, that this host still holds the database's primary (or, in failsafe,
    every replica did: agent/failsafe.py)."""
    (pgdata / FENCED_MARKER).unlink(missing_ok=True)
    log.warning("fence lifted on %s: %s confirmed this host's primary", pgdata, by)


def fenced_databases(host: Host) -> list[str]:
    """Databases whose main on this host is fenced (from the catalog in memory)."""
    out = []
    for db in list(host.known.values()):
        if db.main is not None and fenced(host.clusters.pgdata(db.main)):
            out.append(db.id)
    return sorted(out)


async def lift_fences(host: Host, database_ids: list[str], by: str = "the coordinator"
                      ) -> None:
    """The coordinator confirmed these primaries are still this host's: their fence goes
    and main restarts (a cluster started fenced says it is read-only until then)."""
    for db_id in database_ids:
        db = host.known.get(db_id)
        if db is None or db.main is None:
            continue
        async with host.db_locks[db_id]:
            pgdata = host.clusters.pgdata(db.main)
            if not fenced(pgdata):
                continue
            unfence(pgdata, by)
            if host.clusters.live(db.main) is not None:
                await host.clusters.stop(db.main, "fast")
            await host.clusters.start(db.main, db)


async def ensure_fenced(host: Host, db: DatabaseRecord, main: BranchRecord) -> bool:
    """Main of a database that just got its first replica slot loads the fence: one
    restart (shared_preload_libraries), unless it runs fenced already. True if restarted.

    Refused while the host's lease is not current (no coordinator renewing it):
    the primary would fence itself at once."""
    if not host.config.coordinator:
        return False
    pgdata = host.clusters.pgdata(main)
    try:
        if "cygnet_fence.deadline_file" in (pgdata / "cygnet.conf").read_text():
            return False
    except OSError:
        pass
    if read_deadline(lease_path(host.config)) <= now_ns():
        raise FailedPrecondition("this host's lease is not current (no coordinator renewed it "
                                 "lately): a replicated primary would fence itself; retry")
    log.info("database %s: main restarts once to load the lease fence", db.id)
    await host.clusters.stop(main, "fast")
    await host.clusters.start(main, db)
    return True
