"""Which branches' postmasters run and accept connections, for many branches at
once: one pass over /proc instead of a pid file read per branch through the
branch's mount (a FUSE round trip each on zfs-fuse), so listing 1,000 branches
costs no more than the running ones' pid files, and those at most once a second
each (Clusters.seen_ready: "ready" read within READY_FOR seconds is believed)."""

from __future__ import annotations

import os
import time

from cygnet.agent import layout as L
from cygnet.agent.clusters import Clusters
from cygnet.agent.inventory import BranchRecord
from cygnet.postgres import procfs
from cygnet.postgres.layout import PGDATA
from cygnet.postgres.pidfile import read_pidfile

# Seconds a pid file's "ready" is believed: a postmaster that restarts its children
# after one crashed says "starting" again until its recovery ends.
READY_FOR = 1.0


class LiveView:
    """The host's postmasters as of its making; ask it about any branch."""

    def __init__(self, clusters: Clusters) -> None:
        self.clusters = clusters
        # The kernel names a cwd with symlinks resolved: so must the lookups.
        self._real_root = os.path.realpath(clusters.config.mount_root)
        self.by_dir = procfs.postmasters(under=self._real_root)
        self._now = time.monotonic()
        live = {(p.pid, p.start_ticks) for p in self.by_dir.values()}
        clusters.seen_ready = {k: t for k, t in clusters.seen_ready.items()
                               if k in live and self._now - t < READY_FOR}

    def _key(self, branch: BranchRecord) -> str:
        return f"{L.mount_path(self._real_root, branch.dataset)}/{PGDATA}"

    def live(self, branch: BranchRecord) -> bool:
        return self._key(branch) in self.by_dir

    def accepting(self, branch: BranchRecord) -> bool:
        """Live and done with startup and recovery (its pid file says "ready")."""
        postmaster = self.by_dir.get(self._key(branch))
        if postmaster is None:
            return False
        key = (postmaster.pid, postmaster.start_ticks)
        if key in self.clusters.seen_ready:
            return True
        pidfile = read_pidfile(self.clusters.pgdata(branch))
        if pidfile is None or pidfile.pid != postmaster.pid or pidfile.status != "ready":
            return False
        self.clusters.seen_ready[key] = self._now
        return True
