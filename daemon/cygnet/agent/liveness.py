"""Which branches' postmasters run and accept connections, for many branches at
once: one pass over /proc instead of a pid file read per branch through the
branch's mount (a FUSE round trip each on zfs-fuse), so listing 1,000 branches
costs no more than the running ones' pid files."""

from __future__ import annotations

import os

from cygnet.agent import layout as L
from cygnet.agent.clusters import Clusters
from cygnet.agent.inventory import BranchRecord
from cygnet.postgres import procfs
from cygnet.postgres.layout import PGDATA
from cygnet.postgres.pidfile import read_pidfile


class LiveView:
    """The host's postmasters as of its making; ask it about any branch."""

    def __init__(self, clusters: Clusters) -> None:
        self.clusters = clusters
        self.by_dir = procfs.postmasters()
        # The kernel names a cwd with symlinks resolved: so must the lookups.
        self._real_root = os.path.realpath(clusters.config.mount_root)

    def _key(self, branch: BranchRecord) -> str:
        return f"{L.mount_path(self._real_root, branch.dataset)}/{PGDATA}"

    def live(self, branch: BranchRecord) -> bool:
        return self._key(branch) in self.by_dir

    def accepting(self, branch: BranchRecord) -> bool:
        """Live and done with startup and recovery (its pid file says "ready")."""
        postmaster = self.by_dir.get(self._key(branch))
        if postmaster is None:
            return False
        pidfile = read_pidfile(self.clusters.pgdata(branch))
        return pidfile is not None and pidfile.pid == postmaster.pid and pidfile.status == "ready"
