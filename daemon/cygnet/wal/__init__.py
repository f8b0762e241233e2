"""Continuous WAL archiving and point-in-time recovery (docs/durability.md).

- lsn.py: LSNs, WAL file names and the LSN range each segment covers.
- points.py: a recorded point in a branch's WAL (snapshots, forks).
- repo.py: archived WAL in the backup repository, keyed by branch and generation.
- spool.py: the local spool that Postgres' archive_command writes, and its ingestion.
- plan.py: which archived files a recovery reads, chosen by LSN range along
  the branch's ancestry, and their staging next to the recovering cluster.
"""
