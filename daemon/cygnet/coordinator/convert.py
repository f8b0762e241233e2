"""Coordinator records to protobuf messages, and requests to records."""

from __future__ import annotations

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as pb
from cygnet.coordinator import scoring
from cygnet.coordinator.models import (
    Capacity,
    CatalogEntry,
    Constraints,
    HostRecord,
    PoolInfo,
    Registration,
)
from cygnet.coordinator.router import Located, Placed
from cygnet.errors import InvalidArgument
from cygnet.rpc.convert import timestamp


def capacity(msg: pb.HostCapacity, field: str = "capacity") -> Capacity:
    pools = tuple(PoolInfo(p.name, p.size_bytes, p.free_bytes) for p in msg.pools)
    for p in pools:
        if p.free_bytes > p.size_bytes:
            raise InvalidArgument(f"{field}.pools", f"{p.name}: free exceeds size")
    return Capacity(pools, msg.memory_bytes, msg.running_clusters,
                    tuple(sorted(msg.postgres_versions)), msg.database_count)


def capacity_msg(cap: Capacity) -> pb.HostCapacity:
    return pb.HostCapacity(
        pools=[apb.Pool(name=p.name, size_bytes=p.size_bytes, free_bytes=p.free_bytes,
                        used_bytes=p.size_bytes - p.free_bytes) for p in cap.pools],
        memory_bytes=cap.memory_bytes, running_clusters=cap.running_clusters,
        postgres_versions=list(cap.postgres_versions), database_count=cap.database_count)


def registration(req: pb.RegisterHostRequest) -> Registration:
    return Registration(req.host_id, req.address, req.zone, dict(req.labels),
                        capacity(req.capacity), req.max_clusters, req.version)


def candidate(h: HostRecord) -> scoring.Candidate:
    pool = h.capacity.best_pool
    return scoring.Candidate(h.id, h.address, "", h.memory_budget, h.memory_reserved,
                             h.db_count, h.capacity.running_clusters, h.max_clusters,
                             pool.free_bytes if pool else 0, pool.size_bytes if pool else 0,
                             h.pending_disk)


def host(h: HostRecord) -> pb.FleetHost:
    return pb.FleetHost(
        id=h.id, address=h.address, zone=h.zone, labels=h.labels,
        capacity=capacity_msg(h.capacity),
        state=pb.HOST_STATE_AVAILABLE if h.available else pb.HOST_STATE_UNAVAILABLE,
        drained=h.drained, last_heartbeat=timestamp(h.last_heartbeat),
        database_count=h.db_count, memory_reserved_bytes=h.memory_reserved,
        memory_budget_bytes=h.memory_budget, max_clusters=h.max_clusters,
        utilisation=scoring.utilisation(candidate(h)))


def constraints(msg: pb.PlacementConstraints) -> Constraints:
    return Constraints(msg.zone, dict(msg.labels), msg.anti_affinity_group,
                       tuple(msg.avoid_databases))


def placement(p: Placed) -> pb.Placement:
    c = p.choice
    return pb.Placement(host_id=c.host_id, address=c.address, reason=c.reason, score=c.score,
                        reservation_id=p.reservation_id, candidates=c.candidates,
                        eligible=c.eligible)


def catalog_database(e: CatalogEntry) -> apb.Database:
    return apb.Database(id=e.id, name=e.name or "", postgres_version=e.postgres_version,
                        size_class=e.size_class, pool=e.pool, main_branch_id=e.main_branch_id,
                        created_at=timestamp(e.created_at), branch_count=e.branch_count)


def fleet_database(loc: Located, live: apb.Database | None = None) -> pb.FleetDatabase:
    return pb.FleetDatabase(database=live or catalog_database(loc.entry),
                            host_id=loc.entry.host_id, host_available=loc.available)
