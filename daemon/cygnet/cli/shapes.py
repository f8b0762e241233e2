"""The documented JSON shapes of `--json` output (docs/cli.md), one function per message.

Keys are snake_case, times ISO-8601 UTC with a `Z`, sizes in bytes, and an
absent optional value is null rather than an empty string.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from cygnet.api.v1 import agent_pb2 as pb

Json = dict[str, Any]


def iso(ts: Timestamp) -> str | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    when = ts.ToDatetime(tzinfo=dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def state_name(state: int) -> str:
    """BRANCH_STATE_RUNNING -> "running"."""
    return pb.BranchState.Name(state).removeprefix("BRANCH_STATE_").lower()  # type: ignore[arg-type]


def _opt(value: str) -> str | None:
    return value or None


def database(d: pb.Database) -> Json:
    return {
        "id": d.id, "name": d.name, "postgres_version": d.postgres_version,
        "size_class": d.size_class, "pool": d.pool, "main_branch_id": _opt(d.main_branch_id),
        "branch_count": d.branch_count, "quota_bytes": d.quota_bytes or None,
        "created_at": iso(d.created_at),
    }


def branch(b: pb.Branch) -> Json:
    return {
        "id": b.id, "name": b.name, "database_id": b.database_id,
        "database_name": b.database_name, "parent_branch_id": _opt(b.parent_branch_id),
        "parent_branch_name": _opt(b.parent_branch_name),
        "origin_snapshot": _opt(b.origin_snapshot), "state": state_name(b.state),
        "state_message": _opt(b.state_message), "desired_running": b.desired_running,
        "used_bytes": b.used_bytes, "logical_bytes": b.logical_bytes, "port": b.port or None,
        "postgres_version": b.postgres_version, "size_class": b.size_class,
        "child_branch_ids": list(b.child_branch_ids), "created_at": iso(b.created_at),
        "expires_at": iso(b.expires_at), "effective_expires_at": iso(b.effective_expires_at),
        "protected": b.protected, "protected_until": iso(b.protected_until),
        "suspend_after_seconds": b.suspend_after.seconds,  # 0: never (scale to zero)
    }


def snapshot(s: pb.Snapshot) -> Json:
    return {
        "id": s.id, "name": s.name, "branch_id": s.branch_id, "used_bytes": s.used_bytes,
        "dependent_branch_ids": list(s.dependent_branch_ids), "created_at": iso(s.created_at),
    }


def connection(c: pb.Connection) -> Json:
    return {
        "uri": c.uri, "host": c.host, "port": c.port, "user": c.user, "password": c.password,
        "dbname": c.dbname, "socket_dir": _opt(c.socket_dir),
        "endpoint_uri": _opt(c.endpoint_uri),
    }


def pool(p: pb.Pool) -> Json:
    return {"name": p.name, "health": p.health, "size_bytes": p.size_bytes,
            "used_bytes": p.used_bytes, "free_bytes": p.free_bytes}


def host(h: pb.HostStatus) -> Json:
    return {
        "host_id": h.host_id, "hostname": h.hostname, "version": h.version,
        "zfs_dialect": h.zfs_dialect, "postgres_versions": list(h.postgres_versions),
        "database_count": h.database_count, "branch_count": h.branch_count,
        "running_clusters": h.running_clusters, "pools": [pool(p) for p in h.pools],
    }


def lineage(branches: list[pb.Branch]) -> dict[str, list[pb.Branch]]:
    """Children by parent id, oldest first; roots (and orphans) under ""."""
    by_parent: dict[str, list[pb.Branch]] = {}
    ids = {b.id for b in branches}
    for b in sorted(branches, key=lambda b: b.created_at.ToNanoseconds()):
        parent = b.parent_branch_id if b.parent_branch_id in ids else ""
        by_parent.setdefault(parent, []).append(b)
    return by_parent


def tree(branches: list[pb.Branch]) -> list[Json]:
    """Nested lineage: each branch's shape plus `children`, roots first, oldest first."""
    by_parent = lineage(branches)

    def node(b: pb.Branch) -> Json:
        return {**branch(b), "children": [node(c) for c in by_parent.get(b.id, [])]}

    return [node(b) for b in by_parent.get("", [])]
