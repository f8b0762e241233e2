"""What cygnetd reports: branches by state, pool space, per-branch bytes, restarts."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from cygnet import __version__
from cygnet.agent import archive, lifecycle, offsite, replicas
from cygnet.agent import layout as L
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, Inventory
from cygnet.agent.schedules import metrics as schedule_metrics
from cygnet.agent.service import AgentService
from cygnet.endpoint import metrics as endpoint_metrics
from cygnet.metrics.snapshot import gauge
from cygnet.states import BranchState
from cygnet.zfs.pools import pool_status

# Every state a branch can report, so a state with no branch shows 0, not nothing.
STATES = tuple(BranchState)
BRANCH_LABELS = ("pool", "database", "branch", "branch_id")
# zpool's health values (zpool-status(8)); an unknown one is reported as well.
POOL_HEALTH = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "UNAVAIL", "REMOVED", "SUSPENDED")


class AgentMetrics:
    def __init__(self, service: AgentService) -> None:
        self.service = service
        self.host = service.host

    async def build(self) -> list[Metric]:
        return await self._build()

    async def _build(self) -> list[Metric]:
        # Databases and branches without their snapshots: a scrape costs one
        # `zfs get` that grows with branches only, and takes no lock.
        inv = await self.host.catalog()
        branches = [(db, b) for db in inv.databases.values() for b in db.branches.values()]
        metrics: list[Metric] = [
            gauge("cygnet_agent_info", "Version of this cygnetd and its ZFS dialect",
                  ["version", "zfs_dialect"],
                  [((__version__, (await self.host.zfs.dialect()).name), 1.0)]),
            gauge("cygnet_databases", "Databases on this host", [], [((), len(inv.databases))]),
            self._by_state(branches),
            *await self._pools(inv),
            *await self._branch_bytes(inv, branches),
        ]
        restarts = CounterMetricFamily("cygnet_postmaster_restarts",
                                       "Dead postmasters the supervisor started again")
        restarts.add_metric([], float(self.service.supervisor.restarts))
        metrics.append(restarts)
        metrics.extend(self._scale_to_zero())
        metrics.extend(offsite.metrics())
        metrics.extend(archive.metrics())  # WAL archive lag (agent/archive.py)
        metrics.extend(lifecycle.metrics())  # events, webhooks, expiry
        metrics.extend(endpoint_metrics.metrics())  # the Postgres endpoint (docs/endpoints.md)
        metrics.extend(schedule_metrics())  # scheduled snapshots and backups
        metrics.extend(replicas.metrics())  # replicas of other hosts' databases (docs/ha.md)
        return metrics

    def _scale_to_zero(self) -> list[Metric]:
        """Suspends, wakes and failed wakes since the daemon started (agent/scale.py)."""
        scaler = self.service.scaler
        out: list[Metric] = []
        for name, text, value in (
                ("cygnet_branch_suspends", "Branches suspended (idle or asked)", scaler.suspends),
                ("cygnet_branch_wakes", "Suspended or failed branches started by a wake",
                 scaler.starts),
                ("cygnet_branch_wake_failures", "Wakes that could not start their branch",
                 scaler.wake_failures)):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], float(value))
            out.append(counter)
        return out

    def _by_state(self, branches: list[tuple[DatabaseRecord, BranchRecord]]) -> Metric:
        counts = dict.fromkeys(STATES, 0)
        for _, branch in branches:
            state = self.service.state_of(branch)
            counts[state] = counts.get(state, 0) + 1
        return gauge("cygnet_branches", "Branches on this host by state", ["state"],
                     (((s,), float(n)) for s, n in counts.items()))

    async def _pools(self, inv: Inventory) -> list[Metric]:
        pools = [await pool_status(self.host.zfs.runner, p) for p in self.host.config.pools]
        by_pool: dict[str, int] = dict.fromkeys(self.host.config.pools, 0)
        for db in inv.databases.values():
            for b in db.branches.values():
                by_pool[db.pool] = by_pool.get(db.pool, 0) + b.used_bytes
        return [
            gauge("cygnet_pool_size_bytes", "Pool space: used plus available", ["pool"],
                  (((p.name,), p.size_bytes) for p in pools)),
            gauge("cygnet_pool_free_bytes", "Pool space datasets can still use", ["pool"],
                  (((p.name,), p.free_bytes) for p in pools)),
            gauge("cygnet_pool_used_bytes", "Pool space in use", ["pool"],
                  (((p.name,), p.used_bytes) for p in pools)),
            gauge("cygnet_pool_branches_used_bytes",
                  "Space used by branches (their data and snapshots)", ["pool"],
                  (((name,), used) for name, used in by_pool.items())),
            gauge("cygnet_pool_healthy", "1 when zpool reports the pool ONLINE", ["pool"],
                  (((p.name,), float(p.health == "ONLINE")) for p in pools)),
            # A state set: every health value always present, so a change of
            # health moves a 1, it starts no new series.
            gauge("cygnet_pool_health", "The pool's health as zpool reports it (1: current)",
                  ["pool", "health"],
                  (((p.name, h), float(p.health == h)) for p in pools
                   for h in (*POOL_HEALTH, *({p.health} - set(POOL_HEALTH))))),
        ]

    async def _branch_bytes(self, inv: Inventory,
                            branches: list[tuple[DatabaseRecord, BranchRecord]]) -> list[Metric]:
        def labels(db: DatabaseRecord, b: BranchRecord) -> tuple[str, ...]:
            return (db.pool, db.name, b.name, b.id)

        metrics: list[Metric] = [
            gauge("cygnet_branch_used_bytes",
                  "ZFS `used` of a branch: what it holds apart from its origin",
                  BRANCH_LABELS, ((labels(db, b), b.used_bytes) for db, b in branches)),
            gauge("cygnet_branch_referenced_bytes", "ZFS `referenced`: the branch's logical size",
                  BRANCH_LABELS, ((labels(db, b), b.logical_bytes) for db, b in branches)),
        ]
        written = await self._written(inv)
        if written is not None:  # OpenZFS only: zfs-fuse has no `written` property
            metrics.append(gauge(
                "cygnet_branch_written_bytes",
                "ZFS `written`: bytes written to the branch since its latest snapshot",
                BRANCH_LABELS,
                ((labels(db, b), written.get(b.dataset, 0)) for db, b in branches)))
        return metrics

    async def _written(self, inv: Inventory) -> dict[str, int] | None:
        if (await self.host.zfs.dialect()).name != "openzfs":
            return None
        out: dict[str, int] = {}
        for pool in {db.pool for db in inv.databases.values()}:
            props = await self.host.zfs.get_props(L.databases_root(pool), ["written"],
                                                  recursive=True, depth=2)
            out.update({name: ds.number("written") for name, ds in props.items()})
        return out
