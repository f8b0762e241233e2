"""Expiry and protection rules without ZFS: the effective expiry of a tree, and what
UpdateBranch may change for which role."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from cygnet.agent import layout as L
from cygnet.agent.expiry import NEVER, children_index, due, effective_expiry
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.lifetime import PROTECT, UNPROTECT, Change, plan
from cygnet.agent.protection import guard, is_protected
from cygnet.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from cygnet.rpc.auth import CALLER, Caller

NOW = 1_800_000_000.0


def record(branch_id: str, parent: str = "", expires: float = 0.0, protected: bool = False,
           until: float = 0.0) -> BranchRecord:
    b = BranchRecord(branch_id, branch_id, "db1", parent, f"p/{branch_id}", None, 0, "running",
                     L.PHASE_READY, 0.0, "", 0, 0)
    b.expires_at, b.protected, b.protected_until = expires, protected, until
    return b


def database(*branches: BranchRecord) -> DatabaseRecord:
    db = DatabaseRecord("db1", "shop", "p/db1", "p", "15", "small", L.PHASE_READY, 0.0, "")
    db.branches = {b.id: b for b in branches}
    return db


@pytest.fixture
def operator() -> Iterator[None]:
    token = CALLER.set(Caller("client/olga", "operator"))
    yield
    CALLER.reset(token)


def test_a_branch_never_expires_before_its_children() -> None:
    main = record("main")
    parent = record("parent", "main", expires=NOW + 10)
    child = record("child", "parent", expires=NOW + 50)
    grandchild = record("grandchild", "child", expires=NOW + 30)
    db = database(main, parent, child, grandchild)
    assert effective_expiry(db, main, NOW) == NEVER
    assert effective_expiry(db, parent, NOW) == NOW + 50
    assert effective_expiry(db, grandchild, NOW) == NOW + 30
    assert due(db, NOW + 40) == [grandchild]
    assert due(db, NOW + 60) == [parent]  # the topmost: its tree goes with it
    grandchild.expires_at = 0.0  # no expiry: holds every ancestor
    assert effective_expiry(db, parent, NOW) == NEVER and due(db, NOW + 999) == []


def test_protection_holds_a_branch_until_its_lease_lapses() -> None:
    leased = record("leased", "main", expires=NOW + 10, protected=True, until=NOW + 100)
    forever = record("forever", "main", expires=NOW + 10, protected=True)
    db = database(record("main"), leased, forever)
    assert effective_expiry(db, leased, NOW) == NOW + 100
    assert effective_expiry(db, forever, NOW) == NEVER
    assert is_protected(leased, NOW + 99) and not is_protected(leased, NOW + 101)
    assert due(db, NOW + 101) == [leased]


def test_guard_names_the_protected_branch_and_the_override() -> None:
    keep = record("keep", "main", protected=True, until=time.time() + 3600)
    with pytest.raises(FailedPrecondition, match=r"'shop/keep' is protected until .*Z: "
                                                 r"deleting it needs override_protection"):
        guard([record("other", "main"), keep], "deleting it", False, "shop")
    guard([keep], "deleting it", True, "shop")  # no caller: an internal call


def test_an_operator_may_protect_but_not_lift_or_override(operator: None) -> None:
    open_ = record("b", "main")
    props, removed = plan(open_, Change(protection=PROTECT, protect_for=60), NOW)
    assert props == {L.P_PROTECTED: "on", L.P_PROTECTED_UNTIL: f"{NOW + 60:.3f}"}
    held = record("b", "main", protected=True, until=time.time() + 3600)
    with pytest.raises(PermissionDenied, match="removing a branch's protection needs the "
                                               "admin role; client/olga is operator"):
        plan(held, Change(protection=UNPROTECT), time.time())
    with pytest.raises(PermissionDenied, match="shortening"):
        plan(held, Change(protection=PROTECT, protect_for=60), time.time())
    props, removed = plan(held, Change(protection=PROTECT), time.time())  # longer: fine
    assert removed == [L.P_PROTECTED_UNTIL]
    with pytest.raises(PermissionDenied, match="override_protection"):
        guard([held], "deleting it", True)


def test_bad_changes() -> None:
    with pytest.raises(FailedPrecondition, match="main branch never expires"):
        plan(record("main"), Change(expires_at=NOW + 60), NOW)
    with pytest.raises(InvalidArgument, match=r"^protect_for: goes with"):
        plan(record("b", "main"), Change(protect_for=60), NOW)
    assert plan(record("b", "main"), Change(clear_expiry=True), NOW) == ({}, [L.P_EXPIRES])


def test_a_listing_s_children_index_gives_the_same_expiries() -> None:
    main = record("main")
    tree = [record(f"b{i}", "main" if i < 3 else f"b{i % 3}", expires=NOW + i) for i in range(9)]
    tree[4].expires_at = 0.0  # holds b1 for ever
    db = database(main, *tree)
    kids = children_index(db)
    assert sorted(c.id for c in kids["main"]) == ["b0", "b1", "b2"]
    for b in (main, *tree):
        assert effective_expiry(db, b, NOW, kids) == effective_expiry(db, b, NOW)
    assert effective_expiry(db, tree[1], NOW, kids) == NEVER
    assert effective_expiry(db, tree[2], NOW, kids) == NOW + 8
