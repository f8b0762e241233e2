"""Golden templates: one initdb'd, cleanly stopped, snapshotted dataset per pool and version.

initdb runs once per version and pool; every new database is a clone of the
template's @golden snapshot, which is why creating one takes well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict

from cygnet.agent import layout as L
from cygnet.agent.host import Host
from cygnet.postgres.initdb import init_cluster
from cygnet.postgres.layout import ClusterLayout
from cygnet.postgres.versions import resolve_version
from cygnet.zfs import DatasetNotFound

log = logging.getLogger("cygnet.agent")

_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


async def ensure_template(host: Host, pool: str, version: str) -> str:
    """Returns the template's @golden snapshot, making the template first if needed."""
    dataset = L.template(pool, version)
    golden = f"{dataset}@{L.GOLDEN}"
    async with _locks[golden]:
        if await host.zfs.exists(golden):
            return golden
        # A template without @golden is a half-made one from a crash.
        with contextlib.suppress(DatasetNotFound):
            await host.zfs.destroy(dataset, recursive=True)
        started = time.monotonic()
        bindir = resolve_version(version, host.config.postgres_root)[1]
        await host.zfs.create(dataset, {L.P_KIND: "template", L.P_VERSION: version,
                                        L.P_CREATED: f"{time.time():.3f}"})
        try:
            files = ClusterLayout(L.mountpoint(host.config.mount_root, dataset))
            await init_cluster(bindir, files.pgdata, files.log_file)
            await host.zfs.snapshot(golden)
        except BaseException:
            await host.zfs.destroy(dataset, recursive=True)
            raise
        log.info("template %s ready in %.1fs", golden, time.monotonic() - started)
        return golden


async def record_size(host: Host) -> str:
    """The recordsize of a new root: the setting, or 16K (two Postgres pages) on
    OpenZFS. A page written anew then rewrites one 16K record, not a 128K one, so
    clones diverge and a move's incremental rounds (docs/ha.md) grow 8x slower
    under random writes; a full stream costs 1.3-1.7x (benchmarks/README.md).
    zfs-fuse keeps ZFS's 128K: it aborted on a full pool with 16K records."""
    if host.config.record_size:
        return host.config.record_size
    return "128K" if (await host.zfs.dialect()).name == "zfs-fuse" else "16K"


async def ensure_roots(host: Host) -> None:
    """POOL/cygnet (carries the mountpoint), POOL/cygnet/db and POOL/cygnet/templates."""
    for pool in host.config.pools:
        root = L.root(pool)
        if not await host.zfs.exists(root):
            mount = L.pool_mountpoint(host.config.mount_root, pool)
            # atime off: a read must not write, and a clone's reads must not
            # make it diverge from its origin (inherited by every dataset below).
            await host.zfs.create(root, {"mountpoint": str(mount), "atime": "off",
                                         "recordsize": await record_size(host)})
        for child in (L.databases_root(pool), L.templates_root(pool)):
            if not await host.zfs.exists(child):
                await host.zfs.create(child)
