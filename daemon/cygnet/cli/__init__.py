"""The operator CLI `cygnet`: a thin client of cygnetd's gRPC API (click + rich)."""
