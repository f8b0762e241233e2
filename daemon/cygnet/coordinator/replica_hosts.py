"""Which hosts hold a replica of which database, in the coordinator's store.

Written where the coordinator changes it (CreateReplica, DeleteReplica, a
switchover, a failover), so that listing a database's replicas, and the
failover round, ask only those hosts. Asking every host instead costs one RPC
per host per database: at 10,000 hosts a single lost host would send tens of
thousands of calls every failover round. The hosts stay the source of truth
for each replica's state and lag; this table only says whom to ask.
"""

from __future__ import annotations

from cygnet.coordinator.store.sql import SqlStore

_TABLE = """CREATE TABLE IF NOT EXISTS replica_hosts (
  database_id TEXT NOT NULL,
  host_id TEXT NOT NULL,
  PRIMARY KEY (database_id, host_id)
)"""


class ReplicaHosts:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        with store.transaction() as tx:
            tx.x(_TABLE)

    def add(self, database_id: str, host_id: str) -> None:
        with self.store.transaction() as tx:
            tx.x("DELETE FROM replica_hosts WHERE database_id = ? AND host_id = ?",
                 database_id, host_id)
            tx.x("INSERT INTO replica_hosts (database_id, host_id) VALUES (?, ?)",
                 database_id, host_id)

    def remove(self, database_id: str, host_id: str) -> None:
        with self.store.transaction() as tx:
            tx.x("DELETE FROM replica_hosts WHERE database_id = ? AND host_id = ?",
                 database_id, host_id)

    def of(self, database_id: str) -> set[str]:
        with self.store.transaction() as tx:
            rows = tx.q("SELECT host_id FROM replica_hosts WHERE database_id = ?", database_id)
        return {str(r[0]) for r in rows}

    def replicated_databases(self) -> set[str]:
        """Every database that has a replica somewhere."""
        with self.store.transaction() as tx:
            rows = tx.q("SELECT DISTINCT database_id FROM replica_hosts")
        return {str(r[0]) for r in rows}
