"""cygnetd: the per-host daemon. Branch lifecycle, reconciler, supervisor and gRPC API."""
