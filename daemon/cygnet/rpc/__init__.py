"""RPC plumbing shared by cygnetd and the coordinator: interceptors, wire checks,
status mapping and message conversions. Neither daemon's internals are imported here."""
