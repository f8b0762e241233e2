"""An old primary rejoins as a replica after a failover (docs/ha.md "Rejoining").

Its main was fenced: it stopped writing before its host's lease expired. It
may still hold commits the new primary lacks (asynchronous ones, acknowledged
after the last WAL its replicas received), so it cannot simply follow the
new primary as a switchover's old primary does. DemoteToReplica with
`rewind`, which the coordinator calls once the old host is back:
1. refused unless main is fenced or down;
2. main stops, and stays stopped (`desired=stopped`); so do the database's
   other branches, which are set aside: a replica's dataset serves main only,
   and the database's branches now live with its new primary. Each becomes a
   `lost-copy` (kept, never started, its data intact: `zfs clone` can bring it
   back by hand), with a `failed` event naming it; they go with the replica;
3. PrepareReplica on the new primary (agent/switchover.py): this host's slot,
   which holds WAL from now on, and the replication role, which may read
   the files pg_rewind needs (replica_source.REWIND_FUNCTIONS);
4. a snapshot `rejoin-TIME` keeps main as it was: its extra commits can be
   read from a clone of it; `cygnet replica rm` removes it with the replica;
5. pg_rewind from the new primary, over TLS as the replication role: it
   finishes crash recovery first if the host died (`postgres --single`), then
   copies the blocks changed since the timelines split; main's own WAL from
   before the split is kept for the replay (`_keep_wal`);
6. the standby starts (still a primary's datasets, so a failure is undone by
   rolling back), then the datasets become a replica's (switchover.demote).
A failure in step 5 or 6 rolls main back to the snapshot (RewindFailed),
and the copy is seeded afresh from the new primary instead, beside the data
it replaces (agent/reseed.py). Step 1's refusals leave it fenced, and the
coordinator tries again later.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

from cygnet.agent import layout as L
from cygnet.agent import lease, replicas
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.errors import FailedPrecondition
from cygnet.postgres import _cmd, _fs, process
from cygnet.postgres.versions import resolve_version
from cygnet.states import Desired

log = logging.getLogger("cygnet.agent.rejoin")

SNAPSHOT_PREFIX = "rejoin-"
KEPT_WAL = "rejoin-wal"  # beside pgdata while pg_rewind runs
WAL_SEGMENT = re.compile(r"[0-9A-F]{24}")
SNAPSHOT_KIND = "rejoin"  # cygnet:snapshot-kind: main as it was before a rewind
REWIND_TIMEOUT = 1800.0


class RewindFailed(FailedPrecondition):
    """pg_rewind failed, or the rewound copy did not start: main is back as it was."""


def check_can_rejoin(host: Host, db: DatabaseRecord, main: BranchRecord) -> None:
    """Never rewinds a primary that may still write: main must be fenced or down."""
    pgdata = host.clusters.pgdata(main)
    if host.clusters.live(main) is not None and not lease.fenced(pgdata):
        raise FailedPrecondition(f"database {db.name}: main runs here unfenced; this host "
                                 "still holds the primary")


def other_branches(db: DatabaseRecord, main: BranchRecord) -> list[BranchRecord]:
    return sorted((b for b in db.branches.values() if b.id != main.id), key=lambda b: b.name)


async def set_aside(host: Host, db: DatabaseRecord, main: BranchRecord, primary_host_id: str
                    ) -> None:
    """Step 2's branches besides main (stopped by the caller where it could): each
    becomes a lost copy with one write, so the catalog no longer sees it, and its
    port goes back to the pool."""
    for b in other_branches(db, main):
        await host.zfs.set_props(b.dataset, {L.P_KIND: replicas.KIND_LOST,
                                             L.P_DESIRED: Desired.STOPPED})
        if host.clusters.live(b) is not None:  # one the caller could not stop (not ready)
            await process.stop(host.clusters.pgdata(b), "fast")
        if b.port:
            host.ports.release(b.port)
        log.warning("database %s: branch %s stays on this host as a lost copy (%s): the "
                    "database now runs on %s", db.id, b.name, b.dataset, primary_host_id)
        emit(EventKind.FAILED, database_id=db.id, branch_id=b.id, database=db.name,
             branch=b.name, reason=f"the database failed over to host {primary_host_id}; "
             f"this branch's data is kept on this host as {b.dataset}, not served")
    host.known.pop(db.id, None)


async def rewind(host: Host, db: DatabaseRecord, main: BranchRecord,
                 prep: pb.PrepareReplicaResponse, primary: dict[str, str]) -> None:
    """Steps 4 and 5: keep main in a snapshot, pg_rewind it from the new primary and
    start it as its standby; on any failure main goes back to the snapshot."""
    snapshot = f"{main.dataset}@{SNAPSHOT_PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    await host.zfs.snapshot(snapshot, {L.P_SNAP_KIND: SNAPSHOT_KIND,
                                       L.P_CREATED: f"{time.time():.3f}"})
    files = host.clusters.files(main)
    replicas.write_passfile(host, main, prep)
    bindir = resolve_version(db.version_of(main), host.config.postgres_root)[1]
    # The password comes from the passfile, so nothing secret is in `ps`.
    source = (f"host={prep.host} port={prep.port} user={prep.replication_user} "
              f"dbname=postgres sslmode=require connect_timeout=10 "
              f"passfile={files.secret_file.with_name(replicas.PASSFILE)}")
    started = time.monotonic()
    kept = _keep_wal(files.pgdata)
    result = await _cmd.run([str(bindir / "pg_rewind"), "--target-pgdata", str(files.pgdata),
                             "--source-server", source], timeout=REWIND_TIMEOUT,
                            as_postgres=True)
    _restore_wal(files.pgdata, kept)
    if result.returncode != 0:
        await host.zfs.rollback(snapshot)
        said = (result.stderr or result.stdout).strip().splitlines()
        raise RewindFailed(f"database {db.name}: pg_rewind from the new primary failed "
                           f"({said[-1] if said else f'exit {result.returncode}'}); "
                           "the old primary is back as it was")
    # pg_rewind removes the fence's marker with every file the source lacks, but
    # not when there was nothing to rewind; a replica must never start fenced.
    _fs.remove_if_exists(files.pgdata / lease.FENCED_MARKER)
    try:
        await replicas.start_standby(host, replicas.ReplicaRecord(db, main, primary), fresh=True)
    except Exception as exc:
        if host.clusters.live(main) is not None:
            await process.stop(files.pgdata, "immediate")
        await host.zfs.rollback(snapshot)
        raise RewindFailed(f"database {db.name}: the rewound old primary did not start as a "
                           f"standby ({str(exc).splitlines()[0]}); it is back as it was"
                           ) from None
    log.warning("database %s: old primary rewound from %s:%d in %.1fs; its state before is "
                "kept as %s", db.id, prep.host, prep.port, time.monotonic() - started, snapshot)


def _keep_wal(pgdata: Path) -> Path:
    """Hard links to main's own WAL segments, beside pgdata (same filesystem).

    Replay after a rewind starts at the last checkpoint both timelines share,
    and the WAL from there to the split is on main's old timeline. The new
    primary may have recycled those segments already, and pg_rewind before
    PostgreSQL 16 removes what its source lacks, so the standby would wait
    for them forever. These links keep them; pg_rewind rewrites shared names
    in place, so only names it removed are put back."""
    kept = pgdata.parent / KEPT_WAL
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(mode=0o700)
    for segment in (pgdata / "pg_wal").iterdir():
        if WAL_SEGMENT.fullmatch(segment.name) and segment.is_file():
            os.link(segment, kept / segment.name)
    return kept


def _restore_wal(pgdata: Path, kept: Path) -> None:
    wal = pgdata / "pg_wal"
    for segment in kept.iterdir():
        if not (wal / segment.name).exists():
            os.link(segment, wal / segment.name)
    shutil.rmtree(kept, ignore_errors=True)
