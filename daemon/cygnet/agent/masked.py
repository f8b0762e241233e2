"""Masked branches: a masked snapshot built once per parent snapshot and rules, then cloned.

Building (under the database's lock): snapshot the parent; clone it (kind
temp until done, so a crash leaves nothing the reconciler does not remove);
start a private server on 127.0.0.1 with logical workers off; mask every SQL
database the rules name (masking/scrub.py); give the superuser the masked
branches' own password and rewrite pg_authid; clean stop; pg_resetwal, so no
WAL from before the masking remains (recycled segments included); remove the
server log and stats files; write the masked password file; snapshot
`@masked` with `cygnet:masked=1` and the LSN its WAL starts at. Every masked
branch is a clone of that snapshot. The rules are checked against the live
parent before anything is built.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cygnet.agent import layout as L
from cygnet.agent import masked_goldens as G
from cygnet.agent.backups.temp import TEMP
from cygnet.agent.branches import create_branch, find_branch_by_request, take_snapshot
from cygnet.agent.clusters import ADMIN_ROLE
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, Inventory, branch_props
from cygnet.agent.schema_service import Endpoint, SchemaService, connect
from cygnet.agent.service import BranchRef, BranchView
from cygnet.errors import FailedPrecondition, InternalError
from cygnet.masking import rules as R
from cygnet.masking import scrub
from cygnet.masking.sql import Key
from cygnet.masking.store import MaskingStore
from cygnet.names import is_id
from cygnet.postgres import _cmd, fixup, process, sql
from cygnet.postgres.config import ClusterSettings
from cygnet.postgres.layout import ClusterLayout
from cygnet.postgres.sizes import size_class
from cygnet.postgres.upgrade import control_data
from cygnet.zfs import ZfsError

# Files that can hold values from before the masking, removed after the clean stop.
_TRACES = ("pg_stat_tmp", "pg_stat", "log", "pg_logical/snapshots", "pg_logical/mappings")


@dataclass
class Created:
    view: BranchView
    built: bool
    seconds: float
    snapshot: str


def _validate(at: Endpoint, rules: list[R.Rule]) -> None:
    for dbname in sorted({r.dbname for r in rules}):
        with connect(at, dbname) as conn:
            scrub.validate(conn, [r for r in rules if r.dbname == dbname], dbname)


def _scrub(at: Endpoint, rules: list[R.Rule], key: Key) -> None:
    for dbname in sorted({r.dbname for r in rules}):
        with connect(at, dbname) as conn:
            scrub.scrub(conn, [r for r in rules if r.dbname == dbname], dbname, key)


def remove_traces(files: ClusterLayout) -> None:
    for entry in files.log_dir.iterdir() if files.log_dir.exists() else []:
        entry.unlink() if entry.is_file() else shutil.rmtree(entry)
    for rel in _TRACES:
        d = files.pgdata / rel
        for entry in d.iterdir() if d.is_dir() else []:
            entry.unlink() if not entry.is_dir() else shutil.rmtree(entry)
    (files.pgdata / "current_logfiles").unlink(missing_ok=True)


class MaskedBranches:
    def __init__(self, schema: SchemaService) -> None:
        self.schema = schema
        self.agent = schema.agent
        self.host = schema.host
        self.store = MaskingStore(self.host.config.state_dir)

    async def set_rules(self, database: str, text: str) -> tuple[DatabaseRecord, str]:
        rules = R.parse(text)
        db = await self.agent.get_database(database)
        at = await self.schema.live(BranchRef(database=db.id, name="main"))
        await asyncio.to_thread(_validate, at, rules)
        self.store.set_rules(db.id, text)
        return db, text

    async def get_rules(self, database: str) -> tuple[DatabaseRecord, str]:
        db = await self.agent.get_database(database)
        return db, self.store.rules(db.id)

    async def create(self, database: str, name: str, parent: str, refresh: bool,
                     request_id: str) -> Created:
        db = await self.agent.get_database(database)
        text = self.store.rules(db.id)
        if not text.strip():
            raise FailedPrecondition(f"database {db.name!r} has no masking rules: set them "
                                     "first (cygnet mask set)")
        rules, digest = R.parse(text), R.digest(text)
        ref = BranchRef(database=db.id, name=parent or "main", field="parent")
        if is_id(parent, "br"):
            ref = BranchRef(database=db.id, branch_id=parent, field="parent")
        at = await self.schema.live(ref)  # woken before the lock: a wake takes it too
        await asyncio.to_thread(_validate, at, rules)  # before anything is built
        started = time.monotonic()
        async with self.host.db_locks[db.id]:
            db, inv = await self.agent.read_database(db.id)
            found = find_branch_by_request(inv, request_id)
            if found is not None:
                return Created(self.agent.view(db, found), False, 0.0, "")
            _, source = self.agent.resolve(inv, ref)
            snap = "" if refresh else await G.find(self.host, db, source, digest)
            built = not snap
            if built:
                snap = await self._build(db, source, rules, digest)
            branch = await self._clone(inv, db, source, name, snap, request_id)
            db.branches[branch.id] = branch
            return Created(self.agent.view(db, branch), built, time.monotonic() - started, snap)

    async def _clone(self, inv: Inventory, db: DatabaseRecord, source: BranchRecord, name: str,
                     snap: str, request_id: str) -> BranchRecord:
        props = await self.host.zfs.get_props(snap, [L.P_SUBS])
        ds = props.get(snap)
        subs = int(ds.user.get(L.P_SUBS, "1")) if ds is not None else 1

        async def populate(branch: BranchRecord) -> int:
            await self.host.zfs.clone(snap, branch.dataset, branch_props(branch))
            return subs

        return await create_branch(self.host, inv, db, name, source.id, "", request_id,
                                   populate=populate)

    async def _build(self, db: DatabaseRecord, source: BranchRecord, rules: list[R.Rule],
                     digest: str) -> str:
        origin, subs = await take_snapshot(self.host, source, L.new_id("sn"), "masking source",
                                           TEMP, "")
        copy_id = L.new_id("mk")
        copy = f"{L.database(db.pool, db.id)}/{copy_id}"
        try:
            await self.host.zfs.clone(origin, copy, {
                L.P_KIND: TEMP, L.P_DATABASE: db.id, G.P_MASK_OF: source.id,
                G.P_MASK_RULES: digest, L.P_CREATED: f"{time.time():.3f}"})
            files = ClusterLayout(L.mountpoint(self.host.config.mount_root, copy))
            bindir = self.host.clusters.bindir(db, source)
            major = int(db.version_of(source).split(".")[0] or 0)
            await self._mask(copy_id, files, bindir, major, rules, db.id)
            lsn = await fresh_wal(bindir, files.pgdata)
            remove_traces(files)
            _write_secret(files.secret_file, self.store.password(db.id))
            snap = f"{copy}@{G.SNAP}"
            await self.host.zfs.snapshot(snap, {
                L.P_SNAP_KIND: G.MASKED, G.P_MASKED: "1", G.P_MASKED_LSN: lsn,
                L.P_CREATED: f"{time.time():.3f}", L.P_SUBS: str(subs)})
            await self.host.zfs.set_props(copy, {L.P_KIND: G.MASKED})
            await self.host.zfs.set_props(origin, {L.P_SNAP_KIND: G.SOURCE_KIND})
            return snap
        except BaseException:
            try:
                await G.destroy(self.host, copy)
                await self.host.zfs.destroy(origin)
            except ZfsError:  # the reconciler removes temp leftovers at the next start
                pass
            raise

    async def _mask(self, copy_id: str, files: ClusterLayout, bindir: Path, major: int,
                    rules: list[R.Rule], database_id: str) -> None:
        port = self.host.ports.reserve()
        socket_dir = L.socket_dir(self.host.config.run_dir, copy_id)
        try:
            settings = ClusterSettings(
                port=port, listen_addresses="127.0.0.1", socket_dir=socket_dir,
                size=size_class("nano"), logical_workers_enabled=False,
                tls=self.host.clusters.tls, major=major)
            fixup.prepare_clone(files.pgdata, files.log_file, settings)
            await process.start(bindir, files.pgdata, files.log_file)
            try:
                at = Endpoint(socket_dir, port, "the masked copy")
                key = Key.of(self.store.key(database_id))
                await asyncio.to_thread(_scrub, at, rules, key)
                await sql.set_password(socket_dir, port, ADMIN_ROLE,
                                       self.store.password(database_id))
                await asyncio.to_thread(_vacuum_roles, at)
            finally:
                await process.stop(files.pgdata, "fast", log_path=files.log_file)
        finally:
            self.host.ports.release(port)
            shutil.rmtree(socket_dir, ignore_errors=True)


def _vacuum_roles(at: Endpoint) -> None:
    with connect(at, "postgres") as conn:
        scrub.rewrite_roles(conn)


def _write_secret(path: Path, password: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)


async def fresh_wal(bindir: Path, pgdata: Path) -> str:
    """pg_resetwal after the clean stop: every old WAL segment goes; returns the new start."""
    result = await _cmd.run([str(bindir / "pg_resetwal"), "-D", str(pgdata)], timeout=60.0,
                            as_postgres=True)
    if result.returncode != 0:  # it refuses a cluster that was not stopped cleanly
        raise InternalError(f"pg_resetwal failed: {result.stderr.strip()}")
    fields = await control_data(bindir, pgdata)
    return fields.get("Latest checkpoint's REDO location", "")
