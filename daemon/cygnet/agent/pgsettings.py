"""A branch's own Postgres settings and its available extensions.

Values are checked against the pg_settings of the branch's own running
Postgres, stored in its data directory (postgres/settings.py), applied with
a reload, and with a restart when asked and needed. Run under the database's
lock (AgentService._with_branch).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.errors import FailedPrecondition, InvalidArgument
from cygnet.postgres import settings as S
from cygnet.postgres.sql import connect, query_all, query_one

log = logging.getLogger("cygnet.agent")

RELOAD_WAIT_S = 5.0
_USER_CONTEXTS = ("user", "superuser")


@dataclass(frozen=True)
class SettingView:
    name: str
    value: str
    current: str
    pending_restart: bool
    context: str


@dataclass(frozen=True)
class ConfigView:
    branch_id: str
    settings: list[SettingView]
    restarted: bool = False

    @property
    def pending_restart(self) -> bool:
        return any(s.pending_restart for s in self.settings)


@dataclass(frozen=True)
class ExtensionView:
    name: str
    default_version: str
    installed_version: str
    comment: str


def _where(host: Host, branch: BranchRecord) -> tuple[Path, int]:
    return host.clusters.socket_dir(branch), branch.port


def _require_running(host: Host, branch: BranchRecord, why: str) -> None:
    if not host.clusters.accepting(branch):
        raise FailedPrecondition(f"branch {branch.name!r} must be running {why}; "
                                 "start it first")


async def definitions(host: Host, branch: BranchRecord) -> dict[str, S.Definition]:
    rows = await query_all(*_where(host, branch), S.SETTINGS_QUERY)
    return {row[0]: S.Definition(*row) for row in rows}


async def _check_with_postgres(host: Host, branch: BranchRecord,
                               defs: dict[str, S.Definition], wanted: dict[str, str]) -> None:
    """Postgres' own checks (e.g. a time zone's name) for settings a session may set:
    SET LOCAL in a transaction that is rolled back."""
    names = [n for n in wanted if defs[n].context in _USER_CONTEXTS]
    if not names:
        return
    async with await connect(*_where(host, branch)) as conn:
        for name in names:
            try:
                async with conn.transaction(force_rollback=True):
                    await conn.execute("SELECT set_config(%s, %s, true)", (name, wanted[name]))
            except psycopg.Error as exc:
                reason = exc.diag.message_primary or str(exc)
                raise InvalidArgument(S.field(name), reason) from None


def _libdir(host: Host, db: DatabaseRecord) -> Path | None:
    libdir = host.clusters.bindir(db).parent / "lib"
    return libdir if libdir.is_dir() else None


async def _reload(host: Host, branch: BranchRecord) -> None:
    """pg_reload_conf(), then waits until new sessions see the reloaded files."""
    where = _where(host, branch)
    before = await query_one(*where, "SELECT pg_conf_load_time()")
    await query_one(*where, "SELECT pg_reload_conf()")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELOAD_WAIT_S
    while loop.time() < deadline:
        after = await query_one(*where, "SELECT pg_conf_load_time()")
        if after != before:
            return
        await asyncio.sleep(0.05)
    log.warning("branch %s: no reload seen within %.0fs", branch.id, RELOAD_WAIT_S)


async def read_config(host: Host, branch: BranchRecord, restarted: bool = False) -> ConfigView:
    """The stored settings, with what the server uses now when it runs."""
    pgdata = host.clusters.pgdata(branch)
    stored = await asyncio.to_thread(S.read, pgdata)
    if not host.clusters.accepting(branch):
        views = [SettingView(n, v, "", False, "") for n, v in sorted(stored.items())]
        return ConfigView(branch.id, views, restarted)
    defs = await definitions(host, branch)
    shown = dict(await query_all(
        *_where(host, branch),
        "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
        (list(stored),)))
    views = []
    for name, value in sorted(stored.items()):
        d = defs.get(name)
        views.append(SettingView(name, value, shown.get(name, ""),
                                 d is not None and S.pending(d, value),
                                 d.context if d else ""))
    return ConfigView(branch.id, views, restarted)


async def _apply(host: Host, db: DatabaseRecord, branch: BranchRecord,
                 settings: dict[str, str], restart: bool, restart_needed: bool) -> ConfigView:
    await asyncio.to_thread(S.write, host.clusters.pgdata(branch), settings)
    await _reload(host, branch)
    view = await read_config(host, branch)
    if restart and (restart_needed or view.pending_restart):
        log.info("branch %s: restarting for its settings", branch.id)
        await host.clusters.stop(branch)
        await host.clusters.start(branch, db)
        view = await read_config(host, branch, restarted=True)
    return view


async def set_config(host: Host, db: DatabaseRecord, branch: BranchRecord,
                     wanted: dict[str, str], restart: bool) -> ConfigView:
    """Validates `wanted` against the branch's pg_settings, stores and applies it."""
    if not wanted:
        raise InvalidArgument("settings", "give at least one name=value")
    _require_running(host, branch, "to check settings against its pg_settings")
    defs = await definitions(host, branch)
    checked = S.validate(defs, wanted, _libdir(host, db))
    await _check_with_postgres(host, branch, defs, checked)
    stored = await asyncio.to_thread(S.read, host.clusters.pgdata(branch))
    return await _apply(host, db, branch, {**stored, **checked}, restart, False)


async def reset_config(host: Host, db: DatabaseRecord, branch: BranchRecord,
                       names: list[str], restart: bool) -> ConfigView:
    """Drops `names` (all when empty) from the branch's settings."""
    pgdata = host.clusters.pgdata(branch)
    stored = await asyncio.to_thread(S.read, pgdata)
    lowered = [n.lower() for n in names]
    for name in lowered:
        S.check_name(name)
        if name not in stored:
            raise InvalidArgument(S.field(name), "is not one of the branch's settings")
    dropped = lowered or list(stored)
    kept = {n: v for n, v in stored.items() if n not in dropped}
    if not host.clusters.accepting(branch):
        await asyncio.to_thread(S.write, pgdata, kept)  # applies at the next start
        return await read_config(host, branch)
    defs = await definitions(host, branch)
    # A restart-only setting going back to its default needs a restart too.
    needs = any(defs[n].needs_restart for n in dropped if n in defs)
    view = await _apply(host, db, branch, kept, restart, needs)
    if needs and not view.restarted:
        # Not stored any more, so not in the view: say so with the names.
        view.settings.extend(SettingView(n, "", "", True, "postmaster") for n in dropped
                             if n in defs and defs[n].needs_restart)
    return view


async def list_extensions(host: Host, branch: BranchRecord) -> list[ExtensionView]:
    _require_running(host, branch, "to list its extensions")
    rows = await query_all(
        *_where(host, branch),
        "SELECT name, coalesce(default_version, ''), coalesce(installed_version, ''),"
        " coalesce(comment, '') FROM pg_available_extensions ORDER BY name")
    return [ExtensionView(*row) for row in rows]
