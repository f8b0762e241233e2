"""Time spent in external commands (`zfs`, `zpool`, Postgres tools), per tool and verb."""

from __future__ import annotations

from prometheus_client import Histogram

from cygnet.metrics import REGISTRY

# `zfs get` takes milliseconds; a `zfs destroy` on a busy zfs-fuse or an initdb, minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           120.0, 300.0)

COMMAND_DURATION = Histogram(
    "cygnet_command_duration_seconds",
    "Time an external command ran, whatever its outcome (killed ones included)",
    ["tool", "verb"], buckets=BUCKETS, registry=REGISTRY)


def observe(tool: str, verb: str, seconds: float) -> None:
    COMMAND_DURATION.labels(tool, verb).observe(seconds)
