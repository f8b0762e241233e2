"""cygnetd keeps its catalog on disk (agent/catalog_file.py): a start after a clean
stop, or after a kill -9, serves from it, with the writes journalled since read
again, then reads ZFS whole in the background. After a reboot only a clean stop's
save serves."""

from __future__ import annotations

import json
import time

import pytest

from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, private_daemon, query, run

pytestmark = pytest.mark.integration

SAVED = "starting from the saved catalog"


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


def test_a_start_after_a_stop_or_a_kill_serves_from_the_kept_catalog() -> None:
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
        assert f"{SAVED} " in log and "and 0 names written since" in log, log[-3000:]
        assert query(db.connection, "select 1") == [(1,)]
        deadline = time.monotonic() + 60  # the background read finds the change
        while names(d) != {"main", "renamed"}:
            assert time.monotonic() < deadline, names(d)
            time.sleep(0.5)

        # A kill -9 right after a create and a delete: what the last save missed is
        # in the journal, and the start reads it again before it serves.
        with d.stub() as s:
            late = s.CreateBranch(pb.CreateBranchRequest(database="shop", name="late"),
                                  timeout=120).branch
            gone = pb.BranchRef(database="shop", name="renamed")
            s.DeleteBranch(pb.DeleteBranchRequest(branch=gone), timeout=120)
        d.kill9()
        body = json.loads(saved.read_text())
        kept = {name for _, members in body["groups"] for name, _, _ in members}
        lines = (d.base / "state" / "catalog.journal").read_text().splitlines()
        assert lines[0] == f"G {body['generation']}"
        journalled = {line[2:] for line in lines[1:]}
        db_dataset = f"{d.pool.name}/cygnet/db/{db.database.id}"
        late_dataset = f"{db_dataset}/{late.id}"
        assert late_dataset in kept or late_dataset in journalled
        assert dataset not in kept or dataset in journalled, (sorted(kept), lines)

        log = started(d)
        assert f"{SAVED} ({len(kept)} datasets) and {len(journalled)} names" in log, log[-3000:]
        assert names(d) == {"main", "late"}

        # A reboot (another boot id, which is what it changes for the saved files):
        # after a clean stop the flushed save serves; after a kill -9 nothing does.
        d.stop()
        saved.write_text(json.dumps(json.loads(saved.read_text()) | {"boot": "earlier"}))
        log = started(d)
        assert "clean stop before this boot" in log and f"{SAVED} " in log, log[-3000:]
        assert names(d) == {"main", "late"}
        d.kill9()
        if saved.exists():  # the new boot's first save
            saved.write_text(json.dumps(json.loads(saved.read_text()) | {"boot": "earlier"}))
        log = started(d)
        assert SAVED not in log, log[-3000:]
        assert names(d) == {"main", "late"}
