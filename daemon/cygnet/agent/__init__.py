"""cygnetd: the per-host daemon. Branch lifecycle, reconciler, supervisor and gRPC API."""

import os

# cygnetd forks (initdb, postgres, zfs) while gRPC threads run. gRPC's fork
# handlers then re-initialise gRPC in the child, which can crash it before
# exec. Nothing in a child of cygnetd uses gRPC, so the handlers are turned off.
# This must happen before grpc is first used.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
