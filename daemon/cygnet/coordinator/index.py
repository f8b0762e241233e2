"""The leader's in-memory placement index: every host's capacity, ranked per bucket.

A bucket is (zone or "*", Postgres version or "*", size class). Each bucket is
a lazy min-heap of (utilisation after placing that size, db_count, host id,
revision): a host that changes gets a new revision and new entries, and the
stale ones are dropped when they reach the top. The top valid entry is the
host scoring.choose would pick by scanning, so placement costs O(log n)
instead of a scan of the fleet. Labels narrow the candidates first through a
label index; anti-affinity skips hosts at the top of the heap.

The index is a hint: the store's conditional reservation (SqlStore.commit_batch)
is what guarantees no host is overcommitted, so a stale index costs a retry,
never an overcommit.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field

from cygnet.coordinator import scoring
from cygnet.coordinator.models import Constraints, Demand
from cygnet.errors import InvalidArgument
from cygnet.postgres.sizes import SIZE_CLASSES

INF = float("inf")
ANY = "*"
DEMANDS = {name: Demand.for_size(name) for name in SIZE_CLASSES}

Entry = tuple[float, int, str, int]
Bucket = tuple[str, str, str]


@dataclass
class IndexedHost:
    """One host as placement sees it; the counters change with every reservation."""

    id: str
    address: str
    zone: str
    versions: tuple[str, ...]
    labels: dict[str, str]
    memory_budget: int
    memory_reserved: int
    db_count: int
    running_clusters: int
    max_clusters: int
    disk_free: int
    disk_size: int
    pending_disk: int
    available: bool
    drained: bool
    rev: int = 0
    groups: set[str] = field(default_factory=set)

    @property
    def placeable(self) -> bool:
        return self.available and not self.drained

    def candidate(self) -> scoring.Candidate:
        return scoring.Candidate(self.id, self.address, "", self.memory_budget,
                                 self.memory_reserved, self.db_count, self.running_clusters,
                                 self.max_clusters, self.disk_free, self.disk_size,
                                 self.pending_disk)

    def key(self, d: Demand) -> float:
        """scoring.rank of placing `d` (utilisation after it, less the headroom credit),
        INF when it does not fit."""
        clusters = max(self.db_count, self.running_clusters) + 1
        free_after = self.disk_free - self.pending_disk - d.disk_bytes
        if (not self.placeable or self.memory_budget <= 0
                or self.memory_reserved + d.memory_bytes > self.memory_budget
                or free_after < 0 or self.disk_size <= 0
                or self.max_clusters <= 0 or clusters > self.max_clusters):
            return INF
        return max((self.memory_reserved + d.memory_bytes) / self.memory_budget,
                   1.0 - free_after / self.disk_size,
                   clusters / self.max_clusters) - scoring.headroom(self.memory_budget)

    def buckets(self) -> list[tuple[str, str]]:
        return [(z, v) for z in (self.zone, ANY) for v in (*self.versions, ANY)]


class PlacementIndex:
    def __init__(self) -> None:
        self.hosts: dict[str, IndexedHost] = {}
        self._heaps: dict[Bucket, list[Entry]] = defaultdict(list)
        self._members: dict[tuple[str, str], set[str]] = defaultdict(set)
        # Available, undrained members: what Choice.eligible counts (fit aside).
        self._placeable: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._labels: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._groups: dict[str, set[str]] = defaultdict(set)
        # The largest host seen: a size above it is impossible, not a full fleet.
        self._largest = (0, 0)

    # --- keeping it current ---------------------------------------------------------

    def put(self, host: IndexedHost) -> None:
        """Adds or replaces a host (from the store, a registration or a heartbeat)."""
        old = self.hosts.get(host.id)
        if old is not None:
            host.rev, host.groups = old.rev + 1, old.groups
            for zv in old.buckets():
                self._members[zv].discard(old.id)
                self._placeable[zv].discard(old.id)
            for kv in old.labels.items():
                self._labels[kv].discard(old.id)
        self.hosts[host.id] = host
        self._largest = (max(self._largest[0], host.memory_budget),
                         max(self._largest[1], host.disk_size))
        for zv in host.buckets():
            self._members[zv].add(host.id)
            if host.placeable:
                self._placeable[zv].add(host.id)
        for kv in host.labels.items():
            self._labels[kv].add(host.id)
        self._push(host)

    def add_group(self, group: str, host_id: str) -> None:
        if group:
            self._groups[group].add(host_id)
            if host_id in self.hosts:
                self.hosts[host_id].groups.add(group)

    def adjust(self, host_id: str, demand: Demand, sign: int, group: str = "") -> None:
        """Counts a reservation in (+1) or out (-1)."""
        h = self.hosts.get(host_id)
        if h is None:
            return
        h.memory_reserved += sign * demand.memory_bytes
        h.pending_disk += sign * demand.disk_bytes
        h.db_count += sign
        if sign > 0:
            self.add_group(group, host_id)
        h.rev += 1
        self._push(h)

    def set_state(self, host_id: str, available: bool | None = None,
                  drained: bool | None = None) -> None:
        h = self.hosts.get(host_id)
        if h is None:
            return
        h.available = h.available if available is None else available
        h.drained = h.drained if drained is None else drained
        for zv in h.buckets():
            if h.placeable:
                self._placeable[zv].add(h.id)
            else:
                self._placeable[zv].discard(h.id)
        h.rev += 1
        self._push(h)

    def _push(self, h: IndexedHost) -> None:
        for size, d in DEMANDS.items():
            entry = (h.key(d), h.db_count, h.id, h.rev)
            for z, v in h.buckets():
                heap = self._heaps[(z, v, size)]
                heapq.heappush(heap, entry)
                if len(heap) > 4 * len(self._members[(z, v)]) + 64:
                    self._rebuild((z, v, size))

    def _rebuild(self, bucket: Bucket) -> None:
        d = DEMANDS[bucket[2]]
        heap = [(h.key(d), h.db_count, h.id, h.rev)
                for h in (self.hosts[i] for i in self._members[bucket[:2]])]
        heapq.heapify(heap)
        self._heaps[bucket] = heap

    # --- choosing ----------------------------------------------------------------------

    def choose(self, demand: Demand, version: str, c: Constraints,
               excluded: set[str]) -> scoring.Choice:
        """The host scoring.choose would pick, or a clear error naming the field."""
        zv = (c.zone or ANY, version or ANY)
        self._check(demand, version, c)
        excluded = excluded | self._excluded(c)
        if c.labels:
            return self._scan(self._labelled(zv, c.labels), demand, c, excluded)
        heap = self._heaps[(*zv, demand.size_class)]
        skipped: list[Entry] = []
        found: IndexedHost | None = None
        while heap:
            key, _, host_id, rev = heap[0]
            h = self.hosts.get(host_id)
            if h is None or h.rev != rev or zv not in h.buckets():
                heapq.heappop(heap)
                continue
            if key == INF:
                break
            if host_id in excluded:
                skipped.append(heapq.heappop(heap))
                continue
            found = h
            break
        for entry in skipped:
            heapq.heappush(heap, entry)
        if found is None:
            return self._scan(self._members[zv], demand, c, excluded)
        placeable = self._placeable[zv]
        eligible = len(placeable) - len(excluded & placeable)
        return scoring.describe(found.candidate(), None, demand, eligible)

    def _excluded(self, c: Constraints) -> set[str]:
        if not c.anti_affinity_group:
            return set()
        return set(self._groups.get(c.anti_affinity_group, ()))

    def _labelled(self, zv: tuple[str, str], labels: dict[str, str]) -> set[str]:
        ids = set(self._members[zv])
        for kv in labels.items():
            ids &= self._labels.get(kv, set())
        return ids

    def _scan(self, ids: set[str], demand: Demand, c: Constraints,
              excluded: set[str]) -> scoring.Choice:
        """The slow path (labels, or nothing fits): scoring.choose over a subset."""
        hosts = [self.hosts[i] for i in sorted(ids) if self.hosts[i].placeable]
        return scoring.choose([h.candidate() for h in hosts], demand,
                              Constraints(zone=c.zone), excluded)

    def _check(self, demand: Demand, version: str, c: Constraints) -> None:
        """Requests no host could ever serve are bad input, not a full fleet."""
        if not self.hosts:
            return
        if c.zone and not self._members.get((c.zone, ANY)):
            zones = ", ".join(sorted({h.zone for h in self.hosts.values()})[:10])
            raise InvalidArgument("constraints.zone", f"no host is in zone {c.zone!r} "
                                  f"(zones: {zones})")
        if version and not self._members.get((ANY, version)):
            have = sorted({v for h in self.hosts.values() for v in h.versions})
            raise InvalidArgument("postgres_version", f"no host runs Postgres {version!r} "
                                  f"(hosts run: {', '.join(have) or 'none'})")
        if demand.memory_bytes > self._largest[0] or demand.disk_bytes > self._largest[1]:
            raise InvalidArgument("size_class", f"no host could ever hold a "
                                  f"{demand.size_class} database (memory or pool too small)")
