"""The host's Postgres-protocol endpoint: one port, routed to each branch by name.

docs/endpoints.md describes the design: routing by TLS SNI (TLS passed through
to the branch's own Postgres, bytes moved by the C relay), `options=endpoint=`
for clients without SNI (TLS terminated here), and Postgres errors with a
SQLSTATE for endpoints that do not exist or cannot start.
"""
