"""A clean stop saves the catalog and the next start serves from it, then reads ZFS
whole in the background (agent/catalog_file.py); a killed daemon saves nothing."""

from __future__ import annotations

import time

import pytest

from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, private_daemon, query, run

pytestmark = pytest.mark.integration

SAVED = "starting from the catalog saved at the last stop"


def names(d: Daemon) -> set[str]:
    with d.stub() as s:
        return {b.name for b in s.ListBranches(pb.ListBranchesRequest(database="shop"),
                                               timeout=60).branches}


def started(d: Daemon) -> str:
    """Starts the daemon; returns what it logged meanwhile."""
    mark = d.log_path.stat().st_size
    d.start()
    with d.log_path.open("rb") as f:
        f.seek(mark)
        return f.read().decode(errors="replace")


def test_a_clean_stop_saves_the_catalog_and_a_kill_does_not() -> None:
    with private_daemon("ws", 62300, "2G", unix_only=True) as d:
        with d.stub() as s:
            db = s.CreateDatabase(pb.CreateDatabaseRequest(name="shop", size_class="nano"),
                                  timeout=120)
            dev = s.CreateBranch(pb.CreateBranchRequest(database="shop", name="dev"),
                                 timeout=120).branch
        saved = d.base / "state" / "catalog.json"
        d.stop()
        assert saved.exists()
        # Changed by hand while cygnetd is stopped: the saved catalog does not know it.
        dataset = f"{d.pool.name}/cygnet/db/{db.database.id}/{dev.id}"
        run("zfs", "set", "cygnet:name=renamed", dataset)

        log = started(d)
        assert SAVED in log, log[-3000:]
        assert not saved.exists()  # one start only: a crash later reads ZFS
        assert query(db.connection, "select 1") == [(1,)]
        deadline = time.monotonic() + 60  # the background read finds the change
        while names(d) != {"main", "renamed"}:
            assert time.monotonic() < deadline, names(d)
            time.sleep(0.5)

        d.kill9()
        assert not saved.exists()
        log = started(d)
        assert SAVED not in log
        assert names(d) == {"main", "renamed"}
