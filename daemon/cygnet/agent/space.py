"""Pool space: the reserve that keeps deletes and stops working on a full pool,
the free-space checks in front of snapshots, and mounting what cygnetd owns.

On a full pool ZFS refuses every property write (`zfs set` is a write), while
`zfs destroy` still works. Deleting and stopping a branch begin with a
property write (its phase, its desired state), so each pool keeps a few small
datasets, POOL/cygnet/reserve-N, each holding `refreservation` bytes. A
property write that fails for want of space destroys one of them
(`Zfs.make_room`) and is tried again; releasing a reservation with `zfs set`
would itself be a write that OpenZFS may refuse there. Several chunks let
several such writes through before the reserve is spent; the supervisor makes
them again once the pool has room.
"""

from __future__ import annotations

import logging

from cygnet.agent import layout as L
from cygnet.agent.config import AgentConfig
from cygnet.errors import InvalidArgument, ResourceExhausted
from cygnet.zfs import DatasetExists, DatasetNotFound, OutOfSpace, Zfs, ZfsError

log = logging.getLogger("cygnet.agent")

RESERVE_CHUNKS = 4


class PoolSpace:
    """The reserves of the host's pools and the checks that read free space."""

    def __init__(self, config: AgentConfig, zfs: Zfs) -> None:
        self.config = config
        self.zfs = zfs
        # Pools missing some of their reserve (released, or not made yet).
        self.missing: set[str] = set(config.pools)

    @property
    def chunk_bytes(self) -> int:
        return self.config.reserve_bytes // RESERVE_CHUNKS

    async def release_reserve(self, dataset: str) -> bool:
        """Destroys one reserve chunk of `dataset`'s pool; True if that made room."""
        pool = L.pool_of(dataset)
        if pool not in self.config.pools or self.chunk_bytes <= 0:
            return False
        self.missing.add(pool)
        for chunk in range(RESERVE_CHUNKS):
            try:
                await self.zfs.destroy(L.reserve(pool, chunk))
            except DatasetNotFound:
                continue
            log.warning("pool %s is full: released %d MiB of its reserve so a delete or stop "
                        "can proceed; it comes back once the pool has room", pool,
                        self.chunk_bytes // 2**20)
            return True
        log.error("pool %s is full and its reserve is spent", pool)
        return False

    async def ensure_reserves(self) -> None:
        """Makes each pool's reserve chunks where missing and the pool has room."""
        for pool in self.config.pools:
            await self._ensure_reserve(pool)

    async def ensure_missing_reserves(self) -> None:
        """Like ensure_reserves, for pools known to lack some: cheap enough for every round."""
        for pool in sorted(self.missing):
            await self._ensure_reserve(pool)

    async def _ensure_reserve(self, pool: str) -> None:
        size = self.chunk_bytes
        if size <= 0:
            self.missing.discard(pool)
            return
        present = await self._chunks(pool)
        for chunk in range(RESERVE_CHUNKS):
            if chunk in present:
                continue
            # Only with room to spare: a reserve that leaves the pool under the
            # threshold would refuse snapshots the moment it comes back.
            if await self.zfs.available(L.root(pool)) < size + self.config.min_free_bytes:
                return
            try:
                await self.zfs.create(L.reserve(pool, chunk), {
                    "canmount": "off", "refreservation": str(size), L.P_KIND: "reserve"})
            except (DatasetExists, OutOfSpace):
                return
            log.info("pool %s: reserve chunk %d of %d MiB in place", pool, chunk, size // 2**20)
        self.missing.discard(pool)

    async def _chunks(self, pool: str) -> dict[int, int]:
        """The pool's reserve chunks present: number -> bytes reserved."""
        # By name: a listing one level deep walks every dataset of the pool on
        # zfs-fuse (20 s at 1,000 branches), for host status and each resync.
        listing = await self.zfs.get_existing(
            [L.reserve(pool, chunk) for chunk in range(RESERVE_CHUNKS)], ["refreservation"])
        prefix = L.reserve(pool, 0)[:-1]
        return {int(name[len(prefix):]): ds.number("refreservation")
                for name, ds in listing.items()
                if name.startswith(prefix) and name[len(prefix):].isdigit()}

    async def reserve_of(self, pool: str) -> int:
        """Bytes the pool's reserve holds now (less while released)."""
        return sum((await self._chunks(pool)).values())

    def quota_props(self, quota: int) -> dict[str, str]:
        """The ZFS properties of a database quota of `quota` bytes (0: none)."""
        if quota == 0:
            return {}
        least = 2 * self.config.min_free_bytes
        if quota < least:
            raise InvalidArgument(
                "quota_bytes", f"must be 0 (no limit) or at least {least // 2**20} MiB: "
                "snapshots and branches are refused with less than "
                f"{self.config.min_free_bytes // 2**20} MiB left")
        return {"quota": str(quota)}

    async def require_free(self, dataset: str, what: str) -> None:
        """ResourceExhausted, before anything is touched, when `dataset` has less than
        `min_free_bytes` left (pool space, or its database's quota)."""
        free = await self.zfs.available(dataset)
        needed = self.config.min_free_bytes
        if free < needed:
            raise ResourceExhausted(
                f"not enough free space for {what}: {free // 2**20} MiB left, "
                f"{needed // 2**20} MiB needed (free space, or raise the database's quota)")

    async def mount_own(self) -> list[str]:
        """Mounts every dataset of cygnetd's that should be mounted and is not.

        After a reboot a pool can come back imported but unmounted (zfs-fuse
        re-imports from its cache without mounting; a host may lack a mount
        service), so cygnetd mounts its own datasets, and only those.
        """
        names: list[str] = []
        for pool in self.config.pools:
            try:
                names += await self.zfs.unmounted(L.root(pool))
            except DatasetNotFound:
                continue
        return await mount_each(self.zfs, names)


async def mount_each(zfs: Zfs, names: list[str]) -> list[str]:
    """Mounts each of `names`, logging (not raising) what fails; returns those mounted."""
    mounted: list[str] = []
    for name in names:
        try:
            await zfs.mount(name)
        except ZfsError as exc:
            log.error("could not mount %s: %s", name, exc)
            continue
        mounted.append(name)
    if mounted:
        log.warning("mounted %d dataset(s) that were not mounted: %s", len(mounted),
                    ", ".join(mounted))
    return mounted
