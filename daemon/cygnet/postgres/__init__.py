"""The Postgres layer: one PostgreSQL cluster per ZFS dataset.

Finds installed versions, maps size classes to settings, runs initdb, writes
config and access rules, starts/stops/adopts detached postmasters, fixes up
fresh clones and runs the few SQL statements the agent needs. It never calls
zfs; the agent composes this package with cygnet.zfs.
"""
