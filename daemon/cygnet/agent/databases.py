"""Create and delete databases: a template clone, its `main` branch, its credentials."""

from __future__ import annotations

import asyncio
import logging
import time

from cygnet.agent import backup_janitor, pgsettings
from cygnet.agent import layout as L
from cygnet.agent.branches import Populate, destroy_branch
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, Inventory, branch_props
from cygnet.agent.protection import guard
from cygnet.agent.templates import ensure_template
from cygnet.errors import AlreadyExists, CygnetError, InvalidArgument, NotFound
from cygnet.masking.store import MaskingStore
from cygnet.names import shown, validate_name
from cygnet.postgres.sizes import size_class
from cygnet.postgres.versions import resolve_version
from cygnet.states import Desired
from cygnet.zfs.pools import pool_status

log = logging.getLogger("cygnet.agent")


async def _choose_pool(host: Host, requested: str) -> str:
    if requested:
        if requested not in host.config.pools:
            raise InvalidArgument("pool", f"{shown(requested)} is not one of this host's pools: "
                                  f"{', '.join(host.config.pools)}")
        return requested
    free = {p: (await pool_status(host.zfs.runner, p)).free_bytes for p in host.config.pools}
    return max(free, key=lambda p: free[p])


def _check_name_free(inv: Inventory, name: str) -> None:
    for db in inv.databases.values():
        if db.name == name and db.phase != L.PHASE_DELETING:
            raise AlreadyExists(f"database {name!r} already exists (id {db.id})")


def find_by_request(inv: Inventory, request_id: str) -> DatabaseRecord | None:
    if not request_id:
        return None
    return next((d for d in inv.databases.values() if d.request_id == request_id), None)


async def create_database(host: Host, name: str, version: str, size: str, pool: str,
                          request_id: str, populate: Populate | None = None, *, quota: int = 0,
                          settings: dict[str, str] | None = None
                          ) -> tuple[DatabaseRecord, BranchRecord]:
    """With `populate`, main is a new dataset filled by it instead of a template clone.
    A `quota` (bytes, 0: none) caps the database's dataset, branches and snapshots included."""
    name = validate_name("name", name)
    quota_props = host.space.quota_props(quota)
    version = resolve_version(version, host.config.postgres_root,
                              host.config.default_postgres_version)[0]
    size = size_class(size).name
    pool = await _choose_pool(host, pool)
    golden = await ensure_template(host, pool, version) if populate is None else ""
    async with host.catalog_lock:
        inv = await host.catalog()
        # A retry after a daemon restart: the first call's database, if made.
        found = find_by_request(inv, request_id)
        if found is not None and found.main is not None:
            return found, found.main
        host.ensure_headroom(inv, pool)
        _check_name_free(inv, name)
        db = DatabaseRecord(L.new_id("db"), name, "", pool, version, size, L.PHASE_CREATING,
                            time.time(), request_id, quota_bytes=quota)
        db.dataset = L.database(pool, db.id)
        port = host.ports.reserve()
        try:
            await host.zfs.create(db.dataset, {
                **quota_props,
                "canmount": "off", L.P_KIND: "database", L.P_ID: db.id, L.P_NAME: name,
                L.P_VERSION: version, L.P_SIZE: size, L.P_PHASE: L.PHASE_CREATING,
                L.P_CREATED: f"{db.created:.3f}", L.P_REQUEST: request_id})
        except BaseException:
            host.ports.release(port)
            raise
    async with host.db_locks[db.id]:
        try:
            main = await _create_main(host, db, golden, port, populate)
            if settings:
                # Bad settings undo the create, like any other failure here.
                await pgsettings.set_config(host, db, main, settings, restart=True)
            await host.zfs.set_props(db.dataset, {L.P_PHASE: L.PHASE_READY})
        except BaseException as exc:
            # A domain failure says what happened; only a surprise needs a traceback.
            log.warning("create database %s failed (%s); removing what was made", db.id, exc,
                        exc_info=not isinstance(exc, CygnetError))
            host.ports.release(port)
            await _remove_database(host, db)
            raise
        host.ports.commit(port)
    db.phase = L.PHASE_READY
    db.branches[main.id] = main
    host.known[db.id] = db
    for kind in (EventKind.CREATED, EventKind.READY):
        emit(kind, database_id=db.id, branch_id=main.id, database=db.name, branch=main.name,
             reason=f"PostgreSQL {version}")
    return db, main


async def _create_main(host: Host, db: DatabaseRecord, golden: str, port: int,
                       populate: Populate | None) -> BranchRecord:
    main = BranchRecord(L.new_id("br"), "main", db.id, "", "", golden or None, port,
                        Desired.RUNNING, L.PHASE_CREATING, time.time(), "", 0, 0)
    main.dataset = L.branch(db.pool, db.id, main.id)
    subscriptions = 0
    if populate is None:
        await host.zfs.clone(golden, main.dataset, branch_props(main))
    else:
        subscriptions = await populate(main)
    password = host.clusters.write_secret(main)
    await host.clusters.start_clone(main, db, subscriptions=subscriptions)
    await host.clusters.set_password(main, password)
    await host.zfs.set_props(main.dataset, {L.P_PHASE: L.PHASE_READY})
    main.phase = L.PHASE_READY
    return main


async def delete_database(host: Host, ref: str, override_protection: bool = False
                          ) -> tuple[DatabaseRecord, list[str]]:
    found = host.find_database(ref) or (await host.catalog()).database(ref)
    async with host.db_locks[found.id]:
        inv = await host.database_inventory(found.id)
        if found.id not in inv.databases:
            raise NotFound(f"database {shown(ref)} not found")
        db = inv.databases[found.id]
        guard(db.branches.values(), "deleting its database", override_protection, db.name)
        await host.mark_deleting(db.dataset)  # works on a full pool
        deleted = await finish_delete(host, db)
    for branch_id in deleted:
        emit(EventKind.DELETED, database_id=db.id, branch_id=branch_id, database=db.name,
             branch=db.branches[branch_id].name if branch_id in db.branches else "")
    emit(EventKind.DELETED, database_id=db.id, database=db.name, reason="database deleted")
    return db, deleted


async def finish_delete(host: Host, db: DatabaseRecord) -> list[str]:
    """Stops and destroys every branch, leaves first, then the database dataset.
    Its backups expire from the deletion on (agent/backup_janitor.py)."""
    await asyncio.to_thread(backup_janitor.mark_deleted, host.config.backup_repository, db.id,
                            time.time())
    deleted: list[str] = []
    main = db.main
    order = [*db.descendants(main.id), main] if main else []
    order += [b for b in db.branches.values() if b not in order]  # orphans, if any
    for branch in order:
        await destroy_branch(host, branch)
        deleted.append(branch.id)
    await _remove_database(host, db)
    return deleted


async def _remove_database(host: Host, db: DatabaseRecord) -> None:
    """Destroys a database dataset with whatever branches a failed create left in it."""
    inv = await host.database_inventory(db.id, db.pool)
    found = inv.databases.get(db.id)
    if found is not None:
        for branch in sorted(found.branches.values(), key=lambda b: -b.created):
            await destroy_branch(host, branch)
    if await host.zfs.exists(db.dataset):
        await host.zfs.destroy(db.dataset, recursive=True)
    # Its masking key and rules go with it: nothing masked from it remains.
    MaskingStore(host.config.state_dir).forget(db.id)
