"""Throwaway Postgres servers on temporary clones: a merge base, a merge rehearsal.

Like the backup images (backups/temp.py) the clones live below POOL/cygnet/tmp
with `cygnet:kind=temp`, but writable: Postgres must run crash recovery and
write its pid file. Each server listens on 127.0.0.1 on a port reserved from
the host's range, with logical replication workers off (an inherited
subscription must never reach its publisher). Servers are stopped and
datasets destroyed when the operation ends, however it ends; after a crash,
`stop_leftover_servers` (reconciler) stops any server still running on a
temporary clone, and backups/temp.remove_leftovers destroys the datasets.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cygnet.agent import layout as L
from cygnet.agent.backups.temp import TEMP, temp_root
from cygnet.agent.branches import take_snapshot
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.postgres import fixup, process
from cygnet.postgres.config import ClusterSettings
from cygnet.postgres.layout import ClusterLayout
from cygnet.postgres.sizes import size_class
from cygnet.zfs import DatasetNotFound, ZfsError

log = logging.getLogger("cygnet.agent")


@dataclass(frozen=True)
class Instance:
    clone: str
    pgdata: Path
    socket_dir: Path
    port: int


class Instances:
    """Makes instances and removes them all on exit (servers, clones, snapshots)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._clones: list[str] = []
        self._snapshots: list[str] = []
        self._servers: list[Instance] = []
        self._ports: list[int] = []

    async def __aenter__(self) -> Instances:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def of_branch(self, db: DatabaseRecord, branch: BranchRecord) -> Instance:
        """A server on the branch's current state (CHECKPOINT, snapshot, clone).

        Run it under the database's lock, so the branch cannot go meanwhile."""
        snapshot, _ = await take_snapshot(self.host, branch, L.new_id("tm"), TEMP, TEMP, "")
        self._snapshots.append(snapshot)
        return await self.of_snapshot(db, branch, snapshot)

    async def of_snapshot(self, db: DatabaseRecord, branch: BranchRecord, snapshot: str
                          ) -> Instance:
        """A server on a snapshot of `branch` (whose major it runs)."""
        pool = L.pool_of(snapshot)
        root = temp_root(pool)
        if not await self.host.zfs.exists(root):
            with contextlib.suppress(ZfsError):  # a concurrent call made it
                await self.host.zfs.create(root, {"canmount": "off"})
        clone_id = L.new_id("tm")
        clone = f"{root}/{clone_id}"
        await self.host.zfs.clone(snapshot, clone, {L.P_KIND: TEMP,
                                                    L.P_CREATED: f"{time.time():.3f}"})
        self._clones.append(clone)
        files = ClusterLayout(L.mountpoint(self.host.config.mount_root, clone))
        port = self.host.ports.reserve()
        self._ports.append(port)
        settings = ClusterSettings(
            port=port, listen_addresses="127.0.0.1",
            socket_dir=L.socket_dir(self.host.config.run_dir, clone_id), size=size_class("nano"),
            logical_workers_enabled=False, tls=self.host.clusters.tls,
            major=int(db.version_of(branch).split(".")[0] or 0))
        fixup.prepare_clone(files.pgdata, files.log_file, settings)
        instance = Instance(clone, files.pgdata, settings.socket_dir, port)
        self._servers.append(instance)
        await process.start(self.host.clusters.bindir(db, branch), files.pgdata, files.log_file)
        return instance

    async def close(self) -> None:
        for server in reversed(self._servers):
            try:
                await process.stop(server.pgdata, "immediate", timeout=30.0)
            except Exception:
                log.exception("could not stop the temporary server on %s", server.clone)
        for port in self._ports:
            self.host.ports.release(port)
        for name in [*reversed(self._clones), *reversed(self._snapshots)]:
            try:
                await self.host.zfs.destroy(name, recursive=not name.count("@"))
            except DatasetNotFound:
                pass
            except Exception:  # the reconciler retries at the next start
                log.exception("could not destroy temporary dataset %s", name)
        self._servers.clear()
        self._ports.clear()
        self._clones.clear()
        self._snapshots.clear()


async def stop_leftover_servers(host: Host) -> int:
    """Stops servers a crash left running on temporary clones; returns how many.

    Looks at the mount directories below POOL/cygnet/tmp, not at ZFS: no
    extra `zfs get` at every start for what is almost always nothing."""
    stopped = 0
    for pool in host.config.pools:
        root = L.mountpoint(host.config.mount_root, temp_root(pool))
        try:
            entries = sorted(root.iterdir())
        except OSError:
            continue
        for entry in entries:
            pgdata = ClusterLayout(entry).pgdata
            if process.find_live_postmaster(pgdata) is not None:
                log.warning("stopping a temporary server left running on %s", entry)
                with contextlib.suppress(Exception):
                    await process.stop(pgdata, "immediate", timeout=30.0)
                stopped += 1
    return stopped
