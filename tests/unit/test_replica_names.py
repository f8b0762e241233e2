"""Replica slot names, the standby's config lines, the checks of agent addresses, and
which dataset is a replica's main."""

from __future__ import annotations

import pytest

from cygnet.agent.replica_source import host_of, slot_for
from cygnet.agent.replicas import main_child
from cygnet.errors import InvalidArgument
from cygnet.postgres.config import StandbySettings, render_hba, render_settings
from cygnet.rpc.requests import host_port
from cygnet.zfs import Dataset


@pytest.mark.parametrize("host", ["h1", "db-17", "Rack.3_a", "x" * 16])
def test_slot_names_are_valid_and_name_their_host(host: str) -> None:
    slot = slot_for(host)
    assert slot.startswith("cygnet_replica_") and len(slot) <= 63
    # Postgres' rule for slot names: lower-case letters, digits and underscores.
    assert all(c.islower() or c.isdigit() or c == "_" for c in slot)
    assert host_of(slot) == host


def test_hosts_that_differ_get_different_slots() -> None:
    assert len({slot_for(h) for h in ("db-17", "db_17", "DB-17", "db.17")}) == 4


def test_a_host_id_too_long_for_a_slot_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="host_id"):
        slot_for("h" * 60)


def test_standby_lines_and_the_replication_rule() -> None:
    from dataclasses import replace

    from tests.unit.test_pg_config import conf_dict, settings

    conf = conf_dict(render_settings(replace(settings(), standby=StandbySettings(
        "host=10.0.0.1 port=5433 user=cygnet_replicator passfile=/x/replication.pass",
        "cygnet_replica_h2"))))
    assert conf["primary_slot_name"] == "'cygnet_replica_h2'"
    assert "password" not in conf["primary_conninfo"]
    assert conf["hot_standby"] == "on"
    assert "primary_conninfo" not in conf_dict(render_settings(settings()))
    rules = [line.split() for line in render_hba().splitlines() if "replication" in line
             and not line.startswith(("#", "local"))]
    assert rules and all(r[:3] == ["hostssl", "replication", "cygnet_replicator"]
                         and r[-1] == "scram-sha-256" for r in rules)


@pytest.mark.parametrize("value", ["10.0.0.1:7433", "db-17.example:7433", "[::1]:7433"])
def test_agent_addresses(value: str) -> None:
    host_port("primary_address", value)


@pytest.mark.parametrize("value", ["", "10.0.0.1", ":7433", "a:0", "a:70000", "a b:1",
                                   "a:x", "$(id):1"])
def test_bad_agent_addresses_name_the_field(value: str) -> None:
    with pytest.raises(InvalidArgument, match="primary_address"):
        host_port("primary_address", value)


def _ds(name: str, kind: str | None) -> Dataset:
    return Dataset(name, user={"cygnet:kind": kind} if kind else {})


@pytest.mark.parametrize(("children", "main"), [
    ([("m", "replica")], "m"),
    ([("m", "branch")], "m"),  # a promotion under way
    ([("m", None)], "m"),  # a seed whose stale main is already a lost copy
    # A seed received beside a stale main: the stale main stays main until the commit.
    ([("seed", None), ("m", "replica"), ("lost", "lost-copy")], "m"),
    ([("old", "lost-copy"), ("seed", None)], "seed"),
    ([("old", "lost-copy")], None),
    ([], None),
])
def test_which_dataset_is_a_replicas_main(children: list[tuple[str, str | None]],
                                          main: str | None) -> None:
    found = main_child([_ds(name, kind) for name, kind in children])
    assert (found.name if found else None) == main
