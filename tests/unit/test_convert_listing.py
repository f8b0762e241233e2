"""A listing's Branch messages (agent/convert.py) are the same as one branch's, made
whole or from the part kept with a shared build, and their live part is current."""

from __future__ import annotations

import time

from cygnet.agent import convert
from cygnet.agent import layout as L
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, SnapshotRecord
from cygnet.agent.service import BranchView
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.states import BranchState

NOW = time.time()
DAY = 86400.0


def record(branch_id: str, parent: str = "", **kw: object) -> BranchRecord:
    b = BranchRecord(branch_id, branch_id.removeprefix("br"), "db1", parent,
                     f"p/cygnet/db/db1/{branch_id}", f"p/cygnet/db/db1/{parent}@sn{branch_id}"
                     if parent else None, 6000, "running", L.PHASE_READY, NOW - 60, "", 7, 9)
    for key, value in kw.items():
        setattr(b, key, value)
    return b


def database() -> DatabaseRecord:
    db = DatabaseRecord("db1", "shop", "p/cygnet/db/db1", "p", "15", "nano", L.PHASE_READY,
                        NOW - 99, "")
    main = record("brmain")
    main.snapshots = [SnapshotRecord("snbrdev", "before", "p/cygnet/db/db1/brmain@snbrdev",
                                     "brmain", "user", NOW - 30, 0, 0)]
    # Days ahead: the suite collects this module half an hour before it runs.
    for b in (main, record("brdev", "brmain", expires_at=NOW + DAY),
              record("brkid", "brdev", expires_at=NOW + 2 * DAY, protected=True,
                     protected_until=NOW + 3 * DAY),
              record("brold", "brmain", desired="suspended", suspend_after=30)):
        db.branches[b.id] = b
    return db


def views(db: DatabaseRecord, state: BranchState) -> list[BranchView]:
    return [BranchView(b, db, state, "why" if state == BranchState.FAILED else "", 300.0)
            for b in db.branches.values()]


def test_listing_messages_equal_single_ones_and_follow_the_live_state() -> None:
    db = database()
    for shared in (False, True, True):  # the last: from the kept parts
        for state in (BranchState.RUNNING, BranchState.FAILED):
            listed = pb.ListBranchesResponse()
            convert.fill_branches(listed.branches, views(db, state), shared=shared)
            assert list(listed.branches) == [convert.branch(v) for v in views(db, state)]
    by_id = {b.id: b for b in listed.branches}
    assert by_id["brdev"].origin_snapshot == "before"
    assert list(by_id["brdev"].child_branch_ids) == ["brkid"]
    assert by_id["brdev"].effective_expires_at.seconds == int(NOW + 3 * DAY)
    assert by_id["brkid"].protected and by_id["brkid"].HasField("protected_until")
    assert by_id["brold"].HasField("suspend_after") and not by_id["brold"].desired_running
    assert by_id["brmain"].state == pb.BRANCH_STATE_FAILED
    assert by_id["brmain"].state_message == "why"
    assert "branch_messages" in db.derived
