"""A database's schedule, stored as ZFS user properties on its dataset.

ZFS is the source of truth (a lost state file loses no schedule), and a value
the database does not set is the host's default (AgentConfig.schedule_*):

    cygnet:snapshot-every   seconds between automatic snapshots of main (0: off)
    cygnet:backup-cron      cron expression of scheduled backups of main ("off")
    cygnet:retention        e.g. "hourly=24,daily=7,weekly=4" (backup/retention.py)
    cygnet:schedule-set     when backup-cron was set: the first run is the
                            first match after it, not a missed one
    cygnet:last-backup      when the last scheduled backup ran (attempted)
    cygnet:schedule-error   why the last scheduled run failed (absent: it did not)
    cygnet:retained-since   the oldest recovery point retention keeps (unix time):
                            what WAL pruning may not go behind

Automatic snapshots are ordinary snapshots of main with
cygnet:snapshot-kind=auto, so they are recovery points and branch sources.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cygnet.agent.inventory import DatabaseRecord
from cygnet.backup import cron
from cygnet.backup.retention import Policy
from cygnet.errors import InvalidArgument

if TYPE_CHECKING:
    from cygnet.agent.config import AgentConfig
    from cygnet.agent.host import Host

P_SNAPSHOT_EVERY = "cygnet:snapshot-every"
P_BACKUP_CRON = "cygnet:backup-cron"
P_RETENTION = "cygnet:retention"
P_SCHEDULE_SET = "cygnet:schedule-set"
P_LAST_BACKUP = "cygnet:last-backup"
P_ERROR = "cygnet:schedule-error"
P_RETAINED_SINCE = "cygnet:retained-since"
PROPS = (P_SNAPSHOT_EVERY, P_BACKUP_CRON, P_RETENTION, P_SCHEDULE_SET, P_LAST_BACKUP, P_ERROR,
         P_RETAINED_SINCE)
OFF = "off"
AUTO = "auto"  # cygnet:snapshot-kind of automatic snapshots
SCHEDULE_TRIGGER = "schedule"  # backup metadata "trigger"
MAX_ERROR = 500


@dataclass(frozen=True)
class Schedule:
    snapshot_every: int  # seconds; 0: off
    backup_cron: str  # "": off
    retention: Policy
    host_defaults: tuple[str, ...]  # which of the three come from the host's settings
    schedule_set: float  # anchors the cron expression
    last_backup: float
    last_error: str
    retained_since: float


def host_retention(config: AgentConfig) -> Policy:
    return Policy(config.schedule_keep_last, config.schedule_keep_hourly,
                  config.schedule_keep_daily, config.schedule_keep_weekly,
                  config.schedule_keep_monthly, config.schedule_keep_within)


def check_host_defaults(config: AgentConfig) -> None:
    """Bad defaults stop cygnetd at start, naming the setting."""
    if config.schedule_snapshot_every < 0:
        raise InvalidArgument("schedule_snapshot_every", "must be 0 (off) or more seconds")
    cron.check("schedule_backup_cron", config.schedule_backup_cron)
    host_retention(config).check("schedule_")
    if config.schedule_tick <= 0:
        raise InvalidArgument("schedule_tick", "must be more than 0 seconds")


def _parses(expression: str) -> bool:
    try:
        cron.check("backup_cron", expression)
    except InvalidArgument:
        return False
    return True


def _float(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def from_props(user: dict[str, str], config: AgentConfig, created: float) -> Schedule:
    """A damaged property falls back to the host's default rather than stop the scheduler."""
    defaults = []
    every = user.get(P_SNAPSHOT_EVERY, "")
    if not every.isdigit():
        defaults.append("snapshot_every")
        every = str(config.schedule_snapshot_every)
    expression = user.get(P_BACKUP_CRON)
    if expression == OFF:
        expression = ""
    elif expression is None or not _parses(expression):
        defaults.append("backup_cron")
        expression = config.schedule_backup_cron
    try:
        policy = Policy.parse(user[P_RETENTION]).check()
    except (KeyError, ValueError, InvalidArgument):
        defaults.append("retention")
        policy = host_retention(config)
    return Schedule(int(every), expression, policy, tuple(defaults),
                    _float(user.get(P_SCHEDULE_SET)) or created, _float(user.get(P_LAST_BACKUP)),
                    user.get(P_ERROR, ""), _float(user.get(P_RETAINED_SINCE)))


async def read_all(host: Host, databases: list[DatabaseRecord]) -> dict[str, Schedule]:
    """Every database's schedule by id, in one `zfs get` naming the databases' datasets
    (a listing one level deep walks every dataset below them, on zfs-fuse)."""
    listing = await host.zfs.get_existing([db.dataset for db in databases], PROPS)
    user = {name: ds.user for name, ds in listing.items()}
    return {db.id: from_props(user.get(db.dataset, {}), host.config, db.created)
            for db in databases}


async def read(host: Host, db: DatabaseRecord) -> Schedule:
    props = await host.zfs.get_props(db.dataset, PROPS)
    user = props[db.dataset].user if db.dataset in props else {}
    return from_props(user, host.config, db.created)


@dataclass(frozen=True)
class Change:
    """What SetSchedule asks for; None leaves a value as it is."""

    snapshot_every: int | None = None
    backup_cron: str | None = None
    retention: Policy | None = None
    use_defaults: bool = False


async def write(host: Host, db: DatabaseRecord, change: Change) -> None:
    """Checks everything before writing anything: bad input changes nothing."""
    if change.backup_cron is not None:
        cron.check("backup_cron", change.backup_cron)
    if change.retention is not None:
        change = replace(change, retention=change.retention.check("retention."))
    if change.use_defaults:
        for prop in (P_SNAPSHOT_EVERY, P_BACKUP_CRON, P_RETENTION):
            await host.zfs.inherit(db.dataset, prop)
    props: dict[str, str] = {}
    if change.snapshot_every is not None:
        props[P_SNAPSHOT_EVERY] = str(change.snapshot_every)
    if change.backup_cron is not None:
        props[P_BACKUP_CRON] = change.backup_cron or OFF
        props[P_SCHEDULE_SET] = f"{time.time():.3f}"
    if change.retention is not None:
        props[P_RETENTION] = change.retention.describe()
    await host.zfs.set_props(db.dataset, props)


async def record_run(host: Host, db: DatabaseRecord, *, backup_at: float | None = None,
                     error: str | None = None, retained_since: float | None = None) -> None:
    props: dict[str, str] = {}
    if backup_at is not None:
        props[P_LAST_BACKUP] = f"{backup_at:.3f}"
    if retained_since is not None:
        props[P_RETAINED_SINCE] = f"{retained_since:.3f}"
    if error:
        # One line, bounded: a property value, shown by GetSchedule.
        props[P_ERROR] = " ".join(error.split())[:MAX_ERROR]
    await host.zfs.set_props(db.dataset, props)
    if error == "":
        await host.zfs.inherit(db.dataset, P_ERROR)


def next_backup(schedule: Schedule) -> float | None:
    """When the next scheduled backup is due: the first match after the last run
    (or after the schedule was set). A time in the past means "now": however
    many matches a downtime missed, one backup makes up for them."""
    if not schedule.backup_cron:
        return None
    return cron.next_after(schedule.backup_cron,
                           max(schedule.last_backup, schedule.schedule_set))


def snapshot_due(schedule: Schedule, last_snapshot: float, now: float) -> bool:
    """Due once `snapshot_every` has passed since the newest automatic snapshot;
    after a downtime that is one snapshot, not one per missed interval."""
    return schedule.snapshot_every > 0 and now - last_snapshot >= schedule.snapshot_every


@dataclass(frozen=True)
class View:
    """A schedule as GetSchedule shows it."""

    database: DatabaseRecord
    schedule: Schedule
    last_snapshot: float  # 0: none
    next_backup: float  # 0: off


async def view(host: Host, db: DatabaseRecord) -> View:
    sched = await read(host, db)
    main = db.main
    autos = [s.created for s in (main.snapshots if main is not None else []) if s.kind == AUTO]
    return View(db, sched, max(autos, default=0.0), next_backup(sched) or 0.0)
