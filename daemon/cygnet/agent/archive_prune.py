"""Prunes a database's archived WAL by its retention (decisions: wal/prune.py).

Called after the scheduler records `cygnet:retained-since`. Every snapshot of
the database's branches that holds a WAL point is a recovery point whose
chain's WAL from its `low` on stays; WAL written before the oldest retained
scheduled point goes when no such snapshot needs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cygnet.agent import archive
from cygnet.agent.config import AgentConfig
from cygnet.agent.history import RECOVERY_KINDS
from cygnet.agent.inventory import DatabaseRecord
from cygnet.backup import pruned
from cygnet.wal.plan import Link, load_chain
from cygnet.wal.points import WalPoint
from cygnet.wal.prune import GenKey, Point, floors, prunable

log = logging.getLogger("cygnet.wal")


@dataclass
class WalPruned:
    files: int = 0
    bytes: int = 0


def _points(db: DatabaseRecord, chain: list[Link]) -> list[Point]:
    """The recovery points on `chain`: each owner's snapshots from its generation's start."""
    out: list[Point] = []
    keys: list[GenKey] = [link.generation.key for link in chain]
    for i, link in enumerate(chain):
        g = link.generation
        owner = db.branches.get(g.branch_id)
        for snap in owner.snapshots if owner is not None else []:
            point = WalPoint.parse(snap.wal_point)
            if point is not None and snap.kind in RECOVERY_KINDS and point.low >= g.start_lsn:
                out.append(Point(point.low, tuple(keys[i:])))
    return out


def prune_database(config: AgentConfig, db: DatabaseRecord, retained_since: float
                   ) -> WalPruned:
    """Removes the local WAL of `db` no retained recovery point needs (blocking)."""
    done = WalPruned()
    if retained_since <= 0:
        return done
    repo = archive.repository(config)
    chains: dict[str, list[Link]] = {}
    points: list[Point] = []
    for branch in db.branches.values():
        head, _ = archive.current_generation(config, db, branch)
        chain = load_chain(repo, head)
        chains[branch.id] = chain
        points += _points(db, chain)
    floor = floors(points)
    seen: set[GenKey] = set()
    for chain in chains.values():
        links = [link for link in chain if link.generation.key not in seen]
        seen.update(link.generation.key for link in links)
        objs = [obj for obj in prunable(links, floor, retained_since) if obj.path.exists()]
        # Recorded first: the off-host copy follows this prune (backup/pruned.py).
        pruned.unlink_recorded(config.backup_repository, [obj.path for obj in objs])
        done.files += len(objs)
        done.bytes += sum(obj.size for obj in objs)
    if done.files:
        log.info("pruned %d archived WAL files (%d bytes) of database %s", done.files,
                 done.bytes, db.name)
    return done
