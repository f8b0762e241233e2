"""cygnet-coordinator: the fleet's one endpoint.

It keeps a registry of hosts (registration, heartbeats, drain), places new
databases on them by capacity and constraints, and routes every request about
a database to the host that holds it. State lives in a SQL store: SQLite by
default, PostgreSQL for several coordinators with one leader.
"""
