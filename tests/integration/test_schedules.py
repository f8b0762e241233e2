"""Schedules end to end: automatic snapshots, cron backups, retention, bad input.

A daemon of its own whose scheduler ticks every half second (schedule_tick);
a cron expression's optional sixth field (seconds) lets a backup fire within
seconds. Retention itself is covered on synthetic times in test_retention.py.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from tests.conftest import unique
from tests.harness import Daemon, free_port, private_daemon, query
from tests.integration.backup_helpers import backups, create_backup
from tests.integration.test_cli_support import INVALID, assert_one_error_line, cygnet

pytestmark = pytest.mark.integration

T = TypeVar("T")
WAIT = 60.0


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def sdaemon() -> Iterator[Daemon]:
    settings = f'schedule_tick = 0.5\nmetrics_listen = "127.0.0.1:{METRICS_PORT}"\n' \
               "metrics_interval = 0.5\n"
    with private_daemon("sch", 58400, "3G", settings=settings) as d:
        yield d


def scraped(name: str) -> float:
    """A sample's value from the daemon's /metrics, 0 if absent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0]) if found else 0.0


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def new_db(d: Daemon) -> pb.CreateDatabaseResponse:
    with d.stub() as s:
        db: pb.CreateDatabaseResponse = s.CreateDatabase(
            pb.CreateDatabaseRequest(name=unique("sch"), size_class="nano"), timeout=120)
    query(db.connection, "create table t as select g as id from generate_series(1, 1000) g")
    return db


def set_schedule(d: Daemon, name: str, **fields: Any) -> bpb.Schedule:
    done: bpb.Schedule = backups(d).SetSchedule(bpb.SetScheduleRequest(database=name, **fields),
                                                timeout=30)
    return done


def get_schedule(d: Daemon, name: str) -> bpb.Schedule:
    found: bpb.Schedule = backups(d).GetSchedule(bpb.GetScheduleRequest(database=name),
                                                 timeout=30)
    return found


def listing(d: Daemon, name: str) -> bpb.ListBackupsResponse:
    listed: bpb.ListBackupsResponse = backups(d).ListBackups(
        bpb.ListBackupsRequest(database=name), timeout=30)
    return listed


def zfs_set(d: Daemon, db: pb.CreateDatabaseResponse, prop: str, value: str) -> None:
    dataset = f"{d.pool.name}/cygnet/db/{db.database.id}"
    subprocess.run(["zfs", "set", f"{prop}={value}", dataset], check=True, timeout=60)


def test_automatic_snapshots_are_taken_and_pruned_by_retention(sdaemon: Daemon) -> None:
    db = new_db(sdaemon)
    name = db.database.name
    assert listing(sdaemon, name).snapshots == []  # off by default
    sched = set_schedule(sdaemon, name, snapshot_every_seconds=1,
                         retention=bpb.Retention(keep_last=2))
    assert sched.snapshot_every_seconds == 1 and sched.retention.keep_last == 2
    assert list(sched.host_defaults) == ["backup_cron"]
    seen: set[str] = set()

    def four_taken() -> bool:
        seen.update(s.id for s in listing(sdaemon, name).snapshots)
        return len(seen) >= 4

    wait_for("four automatic snapshots", four_taken)
    set_schedule(sdaemon, name, snapshot_every_seconds=0)
    time.sleep(1.5)  # three ticks: any snapshot in flight is taken and pruned
    kept = list(listing(sdaemon, name).snapshots)
    assert len(kept) == 2 and {s.id for s in kept} <= seen  # pruned to keep_last
    assert all(s.branch_name == "main" and s.database_name == name for s in kept)
    sched = get_schedule(sdaemon, name)
    assert sched.snapshot_every_seconds == 0 and sched.last_error == ""
    assert sched.last_snapshot_at.ToSeconds() == max(s.created_at.ToSeconds() for s in kept)
    oldest = min(s.created_at.ToNanoseconds() for s in kept)
    assert abs(sched.oldest_retained_at.ToNanoseconds() - oldest) < 1e6
    # They are snapshots of main's dataset, not user snapshots to branch from.
    with sdaemon.stub() as s:
        snaps = s.ListSnapshots(pb.ListSnapshotsRequest(
            branch=pb.BranchRef(database=name)), timeout=30).snapshots
    assert not {x.id for x in snaps} & {k.id for k in kept}
    # The CLI lists them beside the backups.
    table = cygnet(sdaemon, "backup", "list", name).out
    assert "Automatic snapshots" in table and kept[0].id in table


def test_cron_backups_fire_and_retention_keeps_manual_backups(sdaemon: Daemon) -> None:
    db = new_db(sdaemon)
    name = db.database.name
    manual = create_backup(sdaemon, pb.BranchRef(database=name))
    set_schedule(sdaemon, name, backup_cron="* * * * * */2",
                 retention=bpb.Retention(keep_last=1))
    seen: set[str] = set()

    def two_scheduled() -> bool:
        seen.update(b.id for b in listing(sdaemon, name).backups if b.trigger == "schedule")
        return len(seen) >= 2

    wait_for("two scheduled backups", two_scheduled)
    set_schedule(sdaemon, name, backup_cron="")
    time.sleep(1.5)
    sched = get_schedule(sdaemon, name)
    assert sched.backup_cron == "" and not sched.HasField("next_backup_at")
    assert sched.HasField("last_backup_at") and sched.last_error == ""

    def pruned() -> list[bpb.Backup] | None:
        found = [b for b in listing(sdaemon, name).backups if b.trigger == "schedule"]
        return found if len(found) == 1 else None

    scheduled = wait_for("retention to keep one scheduled backup", pruned)
    ids = [b.id for b in listing(sdaemon, name).backups]
    assert manual.id in ids and scheduled[0].id in seen  # a manual backup is never pruned
    assert scraped('cygnet_schedule_runs_total{kind="backup",outcome="ok"}') >= 2
    assert scraped('cygnet_schedule_runs_total{kind="backup",outcome="error"}') == 0
    restored = backups(sdaemon).VerifyBackups(bpb.VerifyBackupsRequest(), timeout=120)
    assert [e.result.ok for e in restored if e.HasField("result")] == [True]


def test_missed_backups_run_once_after_a_downtime(sdaemon: Daemon) -> None:
    """As if cygnetd had been down over three 03:00s: one backup, then tomorrow."""
    db = new_db(sdaemon)
    name = db.database.name
    three_days_ago = f"{time.time() - 3 * 86400:.3f}"
    zfs_set(sdaemon, db, "cygnet:schedule-set", three_days_ago)
    zfs_set(sdaemon, db, "cygnet:last-backup", three_days_ago)
    zfs_set(sdaemon, db, "cygnet:retention", "last=10")
    zfs_set(sdaemon, db, "cygnet:backup-cron", "0 3 * * *")

    def scheduled() -> list[bpb.Backup]:
        return [b for b in listing(sdaemon, name).backups if b.trigger == "schedule"]

    wait_for("the missed backup", scheduled)
    time.sleep(2.0)  # four more ticks
    assert len(scheduled()) == 1
    sched = get_schedule(sdaemon, name)
    assert sched.next_backup_at.ToSeconds() > time.time()
    assert sched.next_backup_at.ToDatetime().hour == 3


def code_and_field(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value.code(), exc.value.details()


@pytest.mark.parametrize("fields, field", [
    ({"backup_cron": "61 * * * *"}, "backup_cron"),
    ({"backup_cron": "every night"}, "backup_cron"),
    ({"retention": bpb.Retention()}, "retention"),
    ({"retention": bpb.Retention(keep_daily=0)}, "retention"),
    ({"snapshot_every_seconds": 10**12}, "snapshot_every_seconds"),
])
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
        daemon: Daemon, fields: dict[str, Any], field: str) -> None:
    name = _shared_db(daemon)
    before = get_schedule(daemon, name)
    code, details = code_and_field(
        lambda: set_schedule(daemon, name, **{"snapshot_every_seconds": 60, **fields}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), details
    assert get_schedule(daemon, name) == before


_SHARED: dict[str, str] = {}


def _shared_db(d: Daemon) -> str:
    if "name" not in _SHARED:
        with d.stub() as s:
            _SHARED["name"] = s.CreateDatabase(pb.CreateDatabaseRequest(
                name=unique("schbad"), size_class="nano"), timeout=120).database.name
    return _SHARED["name"]


def test_cli_sets_and_shows_a_schedule(daemon: Daemon) -> None:
    name = _shared_db(daemon)
    shown = cygnet(daemon, "db", "schedule", name, "--snapshots-every", "15m", "--backups",
                   "0 3 * * *", "--keep-hourly", "24", "--keep-daily", "7", "--keep-weekly",
                   "4", "--json").json()
    assert shown["snapshot_every_seconds"] == 900 and shown["backup_cron"] == "0 3 * * *"
    assert shown["retention"] == {"keep_last": 0, "keep_hourly": 24, "keep_daily": 7,
                                  "keep_weekly": 4, "keep_monthly": 0,
                                  "keep_within_seconds": 0}
    assert shown["host_defaults"] == [] and shown["next_backup_at"].endswith("T03:00:00.000Z")
    text = cygnet(daemon, "db", "schedule", name).out
    assert "every 15m" in text and "hourly 24, daily 7, weekly 4" in text
    zero = cygnet(daemon, "db", "schedule", name, "--keep-daily", "0", expect=INVALID)
    assert "--keep-daily" in zero.err
    bad = cygnet(daemon, "db", "schedule", name, "--backups", "61 * * * *", expect=INVALID)
    assert_one_error_line(bad, "backup_cron")
    back = cygnet(daemon, "db", "schedule", name, "--defaults", "--json").json()
    assert back["host_defaults"] == ["snapshot_every", "backup_cron", "retention"]
    assert back["snapshot_every_seconds"] == 0 and back["backup_cron"] == ""
