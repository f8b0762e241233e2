"""The store's tables, written once for both SQL dialects."""

from __future__ import annotations

HOST_COLUMNS = ("id, address, zone, labels, pools, memory_bytes, running_clusters, versions, "
                "database_count, max_clusters, memory_budget, drained, available, "
                "last_heartbeat, version, db_count, memory_reserved, pending_disk")

INDEX_COLUMNS = ("id, address, zone, versions, labels, memory_budget, memory_reserved, db_count, "
                 "running_clusters, max_clusters, disk_free, disk_size, pending_disk, "
                 "available, drained")

CANDIDATE_COLUMNS = ("id, address, labels, memory_budget, memory_reserved, db_count, "
                     "running_clusters, max_clusters, disk_free, disk_size, pending_disk")

DB_COLUMNS = ("id, name, host_id, size_class, postgres_version, pool, memory_bytes, "
              "disk_bytes, affinity_group, state, request_id, expires_at, created_at, "
              "main_branch_id, branch_count")

# Every table: a store that lacks one gets the schema (all of it IF NOT EXISTS).
TABLES = ("hosts", "databases", "branches", "leadership", "moves")

_TABLES = """
CREATE TABLE IF NOT EXISTS hosts (
  id TEXT PRIMARY KEY,
  address TEXT NOT NULL,
  zone TEXT NOT NULL DEFAULT '',
  labels TEXT NOT NULL DEFAULT '{{}}',
  pools TEXT NOT NULL DEFAULT '[]',
  memory_bytes {int} NOT NULL DEFAULT 0,
  running_clusters {int} NOT NULL DEFAULT 0,
  -- ' 15 16 ': matched with LIKE '% 15 %'
  versions TEXT NOT NULL DEFAULT ' ',
  database_count {int} NOT NULL DEFAULT 0,
  max_clusters {int} NOT NULL DEFAULT 0,
  memory_budget {int} NOT NULL DEFAULT 0,
  disk_free {int} NOT NULL DEFAULT 0,
  disk_size {int} NOT NULL DEFAULT 0,
  drained {int} NOT NULL DEFAULT 0,
  available {int} NOT NULL DEFAULT 1,
  last_heartbeat {real} NOT NULL DEFAULT 0,
  registered_at {real} NOT NULL DEFAULT 0,
  version TEXT NOT NULL DEFAULT '',
  db_count {int} NOT NULL DEFAULT 0,
  memory_reserved {int} NOT NULL DEFAULT 0,
  pending_disk {int} NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS hosts_placeable ON hosts (available, drained, zone);
CREATE TABLE IF NOT EXISTS databases (
  id TEXT PRIMARY KEY,
  name TEXT UNIQUE,
  host_id TEXT NOT NULL,
  size_class TEXT NOT NULL,
  postgres_version TEXT NOT NULL DEFAULT '',
  pool TEXT NOT NULL DEFAULT '',
  memory_bytes {int} NOT NULL DEFAULT 0,
  disk_bytes {int} NOT NULL DEFAULT 0,
  affinity_group TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  request_id TEXT NOT NULL DEFAULT '',
  expires_at {real} NOT NULL DEFAULT 0,
  created_at {real} NOT NULL DEFAULT 0,
  main_branch_id TEXT NOT NULL DEFAULT '',
  branch_count {int} NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS databases_host ON databases (host_id);
CREATE INDEX IF NOT EXISTS databases_group ON databases (affinity_group);
CREATE INDEX IF NOT EXISTS databases_request ON databases (request_id);
CREATE INDEX IF NOT EXISTS databases_expiry ON databases (state, expires_at);
CREATE TABLE IF NOT EXISTS branches (
  id TEXT PRIMARY KEY,
  database_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS branches_database ON branches (database_id);
-- One row: who leads, until when (the database's clock), and the epoch that
-- fences the leader's batched writes.
CREATE TABLE IF NOT EXISTS leadership (
  id {int} PRIMARY KEY,
  epoch {int} NOT NULL DEFAULT 0,
  holder TEXT NOT NULL DEFAULT '',
  lease_until {real} NOT NULL DEFAULT 0
);
-- Moves in flight (coordinator/move_journal.py). While a database has a row,
-- both of its hosts may report it: only the move changes its host here.
CREATE TABLE IF NOT EXISTS moves (
  database_id TEXT PRIMARY KEY,
  from_host TEXT NOT NULL,
  to_host TEXT NOT NULL,
  holder TEXT NOT NULL,
  started_at {real} NOT NULL,
  renewed_at {real} NOT NULL
);
"""


def statements(int_type: str, real_type: str) -> list[str]:
    text = _TABLES.format(int=int_type, real=real_type)
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
