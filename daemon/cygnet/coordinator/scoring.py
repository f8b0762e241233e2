"""Placement scoring: which host a new database goes to, and why.

Every eligible host is scored by its utilisation *after* the placement: the
largest of its memory, pool space and cluster-slot fractions (the bottleneck
resource). The host with the lowest such value wins (score = 1 - it), which
spreads databases so that every host fills at the pace of its own capacity:
a host with twice the memory takes twice the databases. Ties go to the host
with fewer databases, then to the smaller id, so the choice is deterministic.

The rank is that utilisation minus a small headroom credit (`headroom`) that
is larger on hosts with little memory. Small hosts therefore run slightly
fuller, and large hosts keep room for large databases: in a mixed fleet a
large database then lands on a large host without lifting it far above the
rest (balance max/mean 1.053 -> 1.024 in bench_placement). In a fleet of equal
hosts the credit is the same everywhere and changes nothing.
docs/coordinator.md explains it with examples.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from cygnet.coordinator.models import MB, MEMORY_MB, Constraints, Demand
from cygnet.errors import ResourceExhausted

# headroom() = min(3/8 x the largest class's memory / budget, 3/8 x 1/4). Both are
# exact binary numbers, so the store's SQL ranks by bit-identical values.
HEADROOM_BYTES = 3 * max(MEMORY_MB.values()) * MB // 8
HEADROOM_CAP = 0.09375


def headroom(memory_budget: int) -> float:
    """The rank credit of a host with this memory budget (see the module's doc)."""
    if memory_budget <= 0:
        return HEADROOM_CAP
    return min(HEADROOM_BYTES / memory_budget, HEADROOM_CAP)


def headroom_sql() -> str:
    """headroom() of the `hosts` row, in SQL that SQLite and PostgreSQL both run."""
    return (f"CASE WHEN memory_budget * {HEADROOM_CAP} < {HEADROOM_BYTES} THEN "
            f"{HEADROOM_CAP} ELSE {HEADROOM_BYTES} * 1.0 / memory_budget END")


def rank(c: Candidate, parts: tuple[float, float, float]) -> float:
    """What placement minimises: utilisation after placement less the headroom credit."""
    return max(parts) - headroom(c.memory_budget)


class Candidate(NamedTuple):
    """One host row as the store reads it for placement."""

    id: str
    address: str
    labels_json: str
    memory_budget: int
    memory_reserved: int
    db_count: int
    running_clusters: int
    max_clusters: int
    disk_free: int
    disk_size: int
    pending_disk: int


@dataclass(frozen=True)
class Choice:
    host_id: str
    address: str
    score: float
    reason: str
    candidates: int
    eligible: int


def fractions(c: Candidate, demand: Demand | None) -> tuple[float, float, float] | str:
    """(memory, pool, clusters) used after placing `demand`, or why it does not fit."""
    mem_need, disk_need, slots = (0, 0, 0)
    if demand is not None:
        mem_need, disk_need, slots = demand.memory_bytes, demand.disk_bytes, 1
    clusters = max(c.db_count, c.running_clusters) + slots
    free_after = c.disk_free - c.pending_disk - disk_need
    if c.memory_budget <= 0 or c.memory_reserved + mem_need > c.memory_budget:
        return "memory"
    if free_after < 0 or c.disk_size <= 0:
        return "pool space"
    if c.max_clusters <= 0 or clusters > c.max_clusters:
        return "cluster slots"
    return ((c.memory_reserved + mem_need) / c.memory_budget,
            1.0 - free_after / c.disk_size,
            clusters / c.max_clusters)


def utilisation(c: Candidate) -> float:
    """The host's current bottleneck fraction (0..1), for reports and balance."""
    got = fractions(c, None)
    return max(got) if isinstance(got, tuple) else 1.0


def _labels_match(c: Candidate, wanted: dict[str, str]) -> bool:
    if not wanted:
        return True
    labels = json.loads(c.labels_json or "{}")
    return all(labels.get(k) == v for k, v in wanted.items())


def choose(candidates: list[Candidate], demand: Demand, constraints: Constraints,
           excluded: set[str]) -> Choice:
    """The best host among `candidates` (already filtered on state, zone and version)."""
    best: tuple[float, int, str] | None = None
    best_host: Candidate | None = None
    best_parts: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # (rank, utilisation after placement, host id) of the second best
    runner_up: tuple[float, float, str] | None = None
    rejected: Counter[str] = Counter()
    eligible = 0
    for c in candidates:
        if c.id in excluded:
            rejected["anti-affinity"] += 1
            continue
        if not _labels_match(c, constraints.labels):
            rejected["labels"] += 1
            continue
        parts = fractions(c, demand)
        if isinstance(parts, str):
            rejected[parts] += 1
            continue
        eligible += 1
        key = (rank(c, parts), c.db_count, c.id)
        if best is None or key < best:
            if best is not None:
                runner_up = (best[0], max(best_parts), best[2])
            best, best_host, best_parts = key, c, parts
        elif runner_up is None or key[0] < runner_up[0]:
            runner_up = (key[0], max(parts), c.id)
    if best is None or best_host is None:
        raise ResourceExhausted(no_fit_reason(len(candidates), rejected, demand))
    second = None if runner_up is None else (runner_up[1], runner_up[2])
    return Choice(best_host.id, best_host.address, 1.0 - max(best_parts),
                  _reason(best_host.id, best_parts, eligible, second),
                  len(candidates), eligible)


def describe(best: Candidate, runner_up: Candidate | None, demand: Demand,
             eligible: int) -> Choice:
    """The Choice for a host the store ranked first (see SqlStore.place's fast path)."""
    parts = fractions(best, demand)
    assert isinstance(parts, tuple), "the store ranked a host that does not fit"
    second = None
    if runner_up is not None:
        other = fractions(runner_up, demand)
        second = (max(other) if isinstance(other, tuple) else 1.0, runner_up.id)
    return Choice(best.id, best.address, 1.0 - max(parts),
                  _reason(best.id, parts, eligible, second), eligible, eligible)


def _reason(host: str, parts: tuple[float, float, float], eligible: int,
            runner_up: tuple[float, str] | None) -> str:
    mem, disk, slots = parts
    text = (f"{host}: utilisation after placement {max(parts):.3f} (memory {mem:.3f}, "
            f"pool {disk:.3f}, clusters {slots:.3f}), the lowest of {eligible} eligible hosts")
    if runner_up is not None:
        text += f"; runner-up {runner_up[1]} at {runner_up[0]:.3f}"
    return text


def no_fit_reason(considered: int, rejected: Counter[str], demand: Demand) -> str:
    if not considered:
        return (f"no available, undrained host matches for a {demand.size_class} database "
                "(zone, Postgres version)")
    why = ", ".join(f"{n} by {what}" for what, n in rejected.most_common())
    return (f"no host has room for a {demand.size_class} database: "
            f"{considered} considered, ruled out {why}")
