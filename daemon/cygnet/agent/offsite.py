"""The off-host repository in cygnetd: the uploader loop, its metrics, and the
remote listing and fetch that restores use (docs/durability.md).

One OffsiteService per daemon, reachable through current() so that the
backup service, the metrics and WAL restores use the same store and status.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from cygnet.agent.config import AgentConfig
from cygnet.agent.registration import host_id
from cygnet.backup import BackupInfo
from cygnet.errors import CygnetError, FailedPrecondition
from cygnet.offsite.config import OffsiteConfig
from cygnet.offsite.crypto import Keyring

if TYPE_CHECKING:  # boto3 takes ~0.2 s to import: only hosts that use it pay
    from cygnet.offsite.store import ObjectStore
    from cygnet.offsite.sync import Uploader

log = logging.getLogger("cygnet.offsite")
MAX_BACKOFF = 60.0

_current: OffsiteService | None = None


def offsite_config(config: AgentConfig) -> OffsiteConfig | None:
    """None when no off-host repository is configured (offsite_endpoint empty)."""
    if not config.offsite_endpoint:
        return None
    keyring = Keyring.from_settings(config.offsite_key_id, config.offsite_keys)
    return OffsiteConfig(
        endpoint=config.offsite_endpoint, bucket=config.offsite_bucket,
        host=host_id(config), keyring=keyring, region=config.offsite_region,
        access_key_id=config.offsite_access_key_id,
        secret_access_key=config.offsite_secret_access_key,
        lock_days=config.offsite_lock_days,
        delete_pruned=config.offsite_delete_pruned).check()


class OffsiteService:
    def __init__(self, config: AgentConfig, offsite: OffsiteConfig) -> None:
        from cygnet.offsite.store import ObjectStore
        from cygnet.offsite.sync import Uploader

        self.config = offsite
        self.store: ObjectStore = ObjectStore(offsite)
        self.uploader: Uploader = Uploader(self.store, config.backup_repository)
        self.cache = config.state_dir / "offsite-cache"
        self._wake = asyncio.Event()
        self._wake_wal = asyncio.Event()
        self._started = asyncio.Event()

    def poke(self) -> None:
        """Something new is in the repository (a backup, archived WAL): upload it now."""
        self._wake.set()
        self._wake_wal.set()

    async def run_wal_lane(self, stop: asyncio.Event, interval: float) -> None:
        """Archived WAL goes up on its own, even while a pass uploads a large backup."""
        await _until(self._started, stop, None)
        delay = interval
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.uploader.run_wal_pass)
                delay = interval
            except CygnetError as exc:
                log.warning("off-host WAL upload failed, retrying in %.0f s: %s", delay, exc)
                delay = min(max(delay * 2, 1.0), MAX_BACKOFF)
            except Exception:
                log.exception("off-host WAL uploader failed")
                delay = min(max(delay * 2, 1.0), MAX_BACKOFF)
            self._wake_wal.clear()
            await _until(self._wake_wal, stop, delay)

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        delay = interval
        started = False
        # A pass runs in a thread: on stop it must end early, or the daemon's exit
        # would wait for the thread.
        watcher = asyncio.create_task(self._cancel_on(stop))
        while not stop.is_set():
            try:
                if not started:
                    await asyncio.to_thread(self.uploader.start)
                    started = True
                    self._started.set()
                    log.info("off-host repository %s/%s, prefix %s, object lock %s",
                             self.config.endpoint, self.config.bucket, self.config.prefix,
                             "on" if self.uploader.status.lock else "off")
                sent = await asyncio.to_thread(self.uploader.run_pass)
                if sent:
                    log.info("uploaded %d bytes off-host", sent)
                delay = interval
            except CygnetError as exc:
                self.uploader.status.last_error = str(exc)
                log.warning("off-host upload failed, retrying in %.0f s: %s", delay, exc)
                delay = min(max(delay * 2, 1.0), MAX_BACKOFF)
            except Exception:
                log.exception("off-host uploader failed")
                self.uploader.status.last_error = "internal error (the daemon log has it)"
                delay = min(max(delay * 2, 1.0), MAX_BACKOFF)
            self._wake.clear()
            await _until(self._wake, stop, delay)
        watcher.cancel()

    async def _cancel_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.uploader.cancel()

    async def list_remote(self) -> list[tuple[str, BackupInfo]]:
        from cygnet.offsite import fetch

        return await asyncio.to_thread(fetch.list_remote, self.store, self.config.keyring)

    async def fetch_backup(self, backup_id: str) -> Path:
        """A local repository holding the backup, fetched from whichever host's prefix has it."""
        from cygnet.offsite import fetch

        def run() -> Path:
            host = fetch.find_backup(self.store, backup_id)
            return fetch.fetch_backup(self.store, self.config.keyring, host, backup_id,
                                      self.cache / host)
        return await asyncio.to_thread(run)

    async def remote_objects(self, host: str, under: str = "") -> list[str]:
        """What host's prefix holds below `under` (e.g. 'wal/BRANCH_ID/'), as repository paths."""
        from cygnet.offsite import fetch

        found = await asyncio.to_thread(fetch.list_objects, self.store, host, under)
        return sorted(found)

    async def hosts(self) -> list[str]:
        from cygnet.offsite import fetch

        return await asyncio.to_thread(fetch.hosts, self.store)

    async def fetch_wal(self, host: str, branch_id: str) -> Path:
        """A local repository holding the branch's archived WAL and its ancestors', as
        `host` uploaded them (fetch.fetch_wal); for point-in-time restores on any host."""
        from cygnet.offsite import fetch

        repo = self.cache / host
        await asyncio.to_thread(fetch.fetch_wal, self.store, self.config.keyring, host,
                                branch_id, repo)
        return repo

    async def fetch_objects(self, host: str, rels: list[str]) -> Path:
        """Makes these objects of host's prefix available in a local repository, returned."""
        from cygnet.offsite import fetch

        repo = self.cache / host
        await asyncio.to_thread(fetch.fetch_objects, self.store, self.config.keyring, host,
                                rels, repo)
        return repo

    def metrics(self) -> list[Metric]:
        s = self.uploader.status
        gauges = [
            ("cygnet_offsite_pending_bytes", "Bytes of the local repository not yet off-host",
             s.pending_bytes),
            ("cygnet_offsite_pending_objects", "Repository objects not yet off-host",
             s.pending_objects),
            ("cygnet_offsite_lag_seconds",
             "Age of the oldest repository object not yet off-host (0: none pending)",
             s.oldest_pending_s),
            ("cygnet_offsite_last_success_timestamp_seconds",
             "When a pass last left nothing pending", s.last_success),
            ("cygnet_offsite_up", "1 when the last upload pass worked", 0 if s.last_error else 1),
            ("cygnet_offsite_locked_pruned_objects",
             "Objects pruned here that object lock keeps in the bucket for now",
             s.locked_objects),
        ]
        out: list[Metric] = []
        for name, doc, value in gauges:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            out.append(g)
        for name, doc, value in [
                ("cygnet_offsite_uploaded_bytes", "Bytes uploaded off-host", s.uploaded_bytes),
                ("cygnet_offsite_failed_passes", "Upload passes that failed", s.failed_passes),
                ("cygnet_offsite_deleted_objects",
                 "Objects pruned here and then deleted from the bucket", s.deleted_objects)]:
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(value))
            out.append(c)
        return out


def start(config: AgentConfig) -> OffsiteService | None:
    global _current
    offsite = offsite_config(config)
    _current = OffsiteService(config, offsite) if offsite is not None else None
    return _current


def current() -> OffsiteService | None:
    return _current


def required() -> OffsiteService:
    if _current is None:
        raise FailedPrecondition("offsite_endpoint: no off-host repository is configured "
                                 "on this host (docs/durability.md)")
    return _current


def poke() -> None:
    if _current is not None:
        _current.poke()


def pending_bytes() -> int | None:
    """Bytes of the repository not yet off-host as of the last pass (None: no
    off-host repository): what a bound on the local backlog compares against."""
    return _current.uploader.status.pending_bytes if _current is not None else None


def metrics() -> list[Metric]:
    return _current.metrics() if _current is not None else []


async def _until(event: asyncio.Event, stop: asyncio.Event, timeout: float | None) -> None:
    """Returns when `event` or `stop` is set, or after `timeout` seconds."""
    wake = asyncio.create_task(event.wait())
    halt = asyncio.create_task(stop.wait())
    await asyncio.wait([wake, halt], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    wake.cancel()
    halt.cancel()
