"""Keeps the catalog on disk (agent/catalog_file.py): taken at start, saved about
once a second while it changes, and once more at a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cygnet.agent import catalog_file, layout
from cygnet.agent.catalog import READ_PROPS, Catalog
from cygnet.agent.config import AgentConfig
from cygnet.zfs import Zfs, ZfsError

log = logging.getLogger("cygnet.agent")

# Seconds between saves while the catalog changes: what a start after a crash
# re-reads is what the journal gathered since the last one.
SAVE_EVERY = 1.0


class CatalogKeeper:
    def __init__(self, config: AgentConfig, zfs: Zfs, catalog: Catalog) -> None:
        self.enabled = config.catalog_warm_start
        self.pools = config.pools
        self.zfs = zfs
        self.catalog = catalog
        self.path = config.state_dir / "catalog.json"
        self.writer = catalog_file.Writer(
            self.path, catalog_file.Journal(config.state_dir / "catalog.journal"))
        self.roots: dict[str, str] = {}  # pool: the guid of its POOL/cygnet
        self.saved_version = -1

    async def take(self) -> catalog_file.Saved | None:
        """At start: the catalog on disk, if it can serve this start. From now on
        every write is journalled (once a save has started a journal, if none)."""
        self.roots = await self._pool_roots()
        if not self.enabled:
            return None
        journal = self.writer.journal
        saved = catalog_file.take(self.path, journal.path, self.roots, READ_PROPS)
        if saved is not None:
            journal.begin(saved.generation, keep=True)
        self.catalog.journal = journal
        return saved

    async def save(self, *, stopped: bool = False) -> bool:
        """Saves the catalog if it is quiet (no write under way, every write read
        back); else what is on disk stays, and still serves. `stopped`: at a clean
        stop, flushed, so that a start after a reboot may take it."""
        catalog = self.catalog
        if not self.enabled or not catalog.loaded:
            return False
        if not all(self.roots.values()):  # unknown at start: try again
            self.roots = await self._pool_roots()
        await catalog.refresh()  # what the last writes marked
        # Nothing awaits from here to the save: no write can start in between.
        if not catalog.quiet or not self.writer.save(catalog.groups, self.roots, READ_PROPS,
                                                     stopped=stopped):
            return False
        self.saved_version = catalog.version
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Saves about once a second while the catalog changes, until the stop (whose
        save comes once the server and the loops have stopped)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAVE_EVERY)
            if stop.is_set() or self.catalog.version == self.saved_version:
                continue
            try:
                await self.save()
            except (OSError, ZfsError) as exc:
                log.warning("the catalog was not saved (%s); the last save still serves "
                            "a start", exc)

    async def _pool_roots(self) -> dict[str, str]:
        """Each pool's POOL/cygnet guid ("" if it cannot be read): what a saved
        catalog is for."""
        roots = {pool: layout.root(pool) for pool in self.pools}
        try:
            found = await self.zfs.get_existing(roots.values(), ["guid"])
        except ZfsError:
            found = {}
        return {pool: found[root].native.get("guid", "") if root in found else ""
                for pool, root in roots.items()}
