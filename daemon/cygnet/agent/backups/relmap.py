"""Names of relation files: (database oid, relfilenode) -> database, schema.name, kind.

Asked of a running branch with SQL: pg_relation_filenode() also resolves
mapped catalogs (whose pg_class.relfilenode is 0). Shared catalogs (database
oid 0) are read once, from the `postgres` database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord
from cygnet.blocks.pgdiff import RelFileKey
from cygnet.errors import Aborted
from cygnet.postgres import sql

log = logging.getLogger("cygnet.agent")

KINDS = {"r": "table", "i": "index", "t": "toast", "S": "sequence", "m": "materialized view",
         "p": "partitioned table", "I": "partitioned index", "v": "view", "c": "type",
         "f": "foreign table"}

_RELATIONS = """
SELECT pg_relation_filenode(c.oid), n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relisshared = %s AND pg_relation_filenode(c.oid) IS NOT NULL
"""


@dataclass(frozen=True)
class RelName:
    database: str
    schema: str
    name: str
    kind: str


async def relation_names(host: Host, branch: BranchRecord, keys: Iterable[RelFileKey]
                         ) -> dict[RelFileKey, RelName]:
    """Names of the keys the branch knows now; {} if it does not run."""
    wanted = set(keys)
    if not wanted or not host.clusters.accepting(branch):
        return {}
    socket_dir = host.clusters.socket_dir(branch)
    try:
        rows = await sql.query_all(socket_dir, branch.port,
                                   "SELECT oid, datname, datallowconn FROM pg_database")
        databases = {int(oid): (str(name), bool(allow)) for oid, name, allow in rows}
        found: dict[RelFileKey, RelName] = {}
        for db_oid in sorted({k.db_oid for k in wanted}):
            datname, allowed = databases.get(db_oid, ("postgres" if db_oid == 0 else "", False))
            if db_oid != 0 and not allowed:
                continue  # template0, or a database dropped since the snapshot
            rows = await sql.query_all(socket_dir, branch.port, _RELATIONS, (db_oid == 0,),
                                       dbname=datname)
            shown = "" if db_oid == 0 else datname
            for node, schema, name, kind in rows:
                key = RelFileKey(db_oid, int(node))
                if key in wanted:
                    found[key] = RelName(shown, schema, name, KINDS.get(kind, kind))
        return found
    except Aborted as exc:
        log.info("relation names from %s: %s", branch.id, exc)
        return {}


def database_names(names: dict[RelFileKey, RelName]) -> dict[int, str]:
    return {k.db_oid: n.database for k, n in names.items() if n.database}
