"""Retention (grandfather-father-son) and schedule due-ness on synthetic timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cygnet.agent.backups import schedule as S
from cygnet.agent.config import AgentConfig
from cygnet.backup import cron
from cygnet.backup.retention import Point, Policy, select
from cygnet.errors import InvalidArgument

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)  # a Wednesday


def hourly_points(hours: int) -> list[Point]:
    """One point every 15 minutes for `hours` hours before NOW."""
    out = []
    for k in range(hours * 4):
        at = NOW - timedelta(minutes=15 * k)
        out.append(Point(at.strftime("%Y%m%dT%H%M"), at.timestamp()))
    return out


def test_gfs_keeps_the_newest_point_of_each_hour_day_and_week() -> None:
    points = hourly_points(24 * 40)  # 40 days
    d = select(points, Policy(keep_hourly=24, keep_daily=7, keep_weekly=4), NOW.timestamp())
    kept = {p.id for p in d.keep}
    hourly = [p for p in d.keep if "hourly" in d.reasons[p.id]]
    assert len(hourly) == 24
    # The newest point of each earlier hour is its :45.
    assert all(p.id.endswith("45") for p in hourly[1:])
    daily = [p for p in d.keep if "daily" in d.reasons[p.id]]
    assert len(daily) == 7
    assert all(p.id.endswith("2345") for p in daily[1:])  # each day's last point
    weekly = [p for p in d.keep if "weekly" in d.reasons[p.id]]
    assert len(weekly) == 4
    # Sundays 23:45 are the newest points of the ISO weeks before this one.
    assert [p.id for p in weekly[1:]] == ["20261122T2345", "20261115T2345", "20261108T2345"]
    assert len(kept) < 24 + 7 + 4
    assert len(d.keep) + len(d.drop) == len(points)
    assert not kept & {p.id for p in d.drop}


def test_keep_last_and_keep_within() -> None:
    points = hourly_points(10)
    d = select(points, Policy(keep_last=3), NOW.timestamp())
    assert [p.id for p in d.keep] == [p.id for p in points[:3]]
    d = select(points, Policy(keep_within_s=3600), NOW.timestamp())
    assert len(d.keep) == 5  # :30, :15, :00, :45, :30 an hour before (inclusive)
    assert d.oldest_kept == points[4]


def test_pinned_points_and_the_newest_are_always_kept() -> None:
    points = hourly_points(2)
    old = points[-1]
    d = select(points, Policy(keep_last=1), NOW.timestamp(), pinned={old.id})
    assert {p.id for p in d.keep} == {points[0].id, old.id}
    assert d.reasons[old.id] == ["pinned"]
    # A rule that keeps nothing by itself (all too old) still leaves the newest.
    d = select(points[5:], Policy(keep_within_s=60), NOW.timestamp())
    assert [p.id for p in d.keep] == [points[5].id]


def test_a_point_kept_by_two_rules_is_listed_once() -> None:
    points = hourly_points(1)
    d = select(points, Policy(keep_last=1, keep_hourly=1, keep_daily=1), NOW.timestamp())
    assert d.reasons[points[0].id] == ["last", "hourly", "daily"]
    assert len(d.keep) == 1


def test_policy_round_trips_and_refuses_nothing_kept() -> None:
    p = Policy(keep_hourly=24, keep_daily=7, keep_weekly=4, keep_within_s=86400)
    assert Policy.parse(p.describe()) == p
    with pytest.raises(InvalidArgument) as exc:
        Policy().check("retention.")
    assert exc.value.field == "retention.retention"
    with pytest.raises(InvalidArgument, match="keep_daily"):
        Policy(keep_daily=-1).check()
    with pytest.raises(ValueError):
        Policy.parse("hourly=x")


@pytest.mark.parametrize("expression", ["61 * * * *", "bogus", "* * *", "0 3 * * funday",
                                        "0 3 * * * * *"])
def test_bad_cron_is_refused_naming_the_field(expression: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        cron.check("backup_cron", expression)
    assert exc.value.field == "backup_cron"


def schedule(expression: str = "", every: int = 0, last_backup: float = 0.0,
             since: float = 0.0) -> S.Schedule:
    return S.Schedule(every, expression, Policy(keep_last=1), (), since, last_backup, "", 0.0)


def test_missed_backups_after_a_downtime_run_once() -> None:
    yesterday_3am = datetime(2026, 11, 24, 3, tzinfo=UTC).timestamp()
    now = datetime(2026, 11, 26, 5, tzinfo=UTC).timestamp()  # down for two 03:00s
    sched = schedule("0 3 * * *", last_backup=yesterday_3am, since=yesterday_3am - 86400)
    due = S.next_backup(sched)
    assert due is not None and due <= now
    after = schedule("0 3 * * *", last_backup=now, since=sched.schedule_set)
    assert S.next_backup(after) == datetime(2026, 11, 27, 3, tzinfo=UTC).timestamp()


def test_a_new_cron_schedule_waits_for_its_first_match() -> None:
    set_at = datetime(2026, 11, 25, 2, 59, tzinfo=UTC).timestamp()
    sched = schedule("0 3 * * *", since=set_at)
    assert S.next_backup(sched) == set_at + 60
    assert S.next_backup(schedule("")) is None


def test_snapshots_due_once_after_many_missed_intervals() -> None:
    sched = schedule(every=900)
    assert S.snapshot_due(sched, 0.0, 1000.0)  # none yet
    assert not S.snapshot_due(sched, 1000.0, 1899.0)
    assert S.snapshot_due(sched, 1000.0, 1000.0 + 900 * 10)
    assert not S.snapshot_due(schedule(every=0), 0.0, 1e9)


def test_properties_fall_back_to_host_defaults() -> None:
    config = AgentConfig(pools=("p",), schedule_snapshot_every=600,
                         schedule_backup_cron="0 3 * * *")
    sched = S.from_props({}, config, 5.0)
    assert sched.host_defaults == ("snapshot_every", "backup_cron", "retention")
    assert (sched.snapshot_every, sched.backup_cron, sched.schedule_set) == (600, "0 3 * * *", 5.0)
    assert sched.retention == Policy(keep_hourly=24, keep_daily=7, keep_weekly=4)
    own = S.from_props({S.P_SNAPSHOT_EVERY: "60", S.P_BACKUP_CRON: S.OFF,
                        S.P_RETENTION: "last=3", S.P_LAST_BACKUP: "7.5"}, config, 5.0)
    assert own.host_defaults == ()
    assert (own.snapshot_every, own.backup_cron, own.retention, own.last_backup) == (
        60, "", Policy(keep_last=3), 7.5)
    # A damaged value is the default, never a stopped scheduler.
    bad = S.from_props({S.P_RETENTION: "nonsense", S.P_SNAPSHOT_EVERY: "-1"}, config, 0.0)
    assert bad.host_defaults == ("snapshot_every", "backup_cron", "retention")
    assert S.from_props({S.P_BACKUP_CRON: "every day"}, config, 0.0).backup_cron == "0 3 * * *"


def test_bad_host_defaults_are_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidArgument) as exc:
        AgentConfig(pools=("p",), schedule_backup_cron="every day").validate()
    assert exc.value.field == "schedule_backup_cron"
    with pytest.raises(InvalidArgument) as exc:
        AgentConfig(pools=("p",), schedule_keep_hourly=0, schedule_keep_daily=0,
                    schedule_keep_weekly=0).validate()
    assert exc.value.field == "schedule_retention"


def test_the_oldest_retained_point_counts_backups_a_snapshot_prune_did_not_look_at() -> None:
    from cygnet.agent.schedules import oldest_of

    snaps = select(hourly_points(2), Policy(keep_last=2), NOW.timestamp())
    newest_snap = snaps.keep[-1].at
    assert oldest_of(snaps, None) == newest_snap
    assert oldest_of(snaps, newest_snap - 86400) == newest_snap - 86400  # an older backup
    assert oldest_of(select([], Policy(keep_last=1), 0.0), None) is None
