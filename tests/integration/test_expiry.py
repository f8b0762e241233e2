"""Branch expiry and protection on a real cygnetd, with a fast expiry loop.

A daemon of its own (expiry_interval = 0.2 s) so that short TTLs expire within
a test; the TTLs are whole seconds, the smallest a Duration-based TTL sensibly
takes, and waits poll for the outcome instead of asserting timings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypedDict, Unpack

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, private_daemon, run
from tests.integration.test_cli_support import assert_one_error_line, cygnet

Stub = pb_grpc.AgentStub


@pytest.fixture(scope="module")
def fast() -> Iterator[Daemon]:
    # --config replaces the harness's own settings file: the roles are repeated here.
    settings = ('expiry_interval = 0.2\n[roles]\n"client/admin" = "admin"\n'
                '"client/operator" = "operator"\n')
    with private_daemon("ex", 61400, "3G", settings=settings) as d:
        yield d


@pytest.fixture
def stub(fast: Daemon) -> Iterator[Stub]:
    with fast.stub() as s:
        yield s


def ref(db: str, name: str) -> pb.BranchRef:
    return pb.BranchRef(database=db, name=name)


def branch(stub: Stub, db: str, name: str, parent: str = "", ttl: int = 0) -> pb.Branch:
    req = pb.CreateBranchRequest(database=db, name=name, parent=parent)
    if ttl:
        req.ttl.CopyFrom(Duration(seconds=ttl))
    made: pb.CreateBranchResponse = stub.CreateBranch(req)
    return made.branch


def names(stub: Stub, db: str) -> set[str]:
    return {b.name for b in stub.ListBranches(pb.ListBranchesRequest(database=db)).branches}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def error_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def events_since(stub: Stub, cursor: int, db: str, until: tuple[str, str]) -> list[pb.Event]:
    """The database's events after `cursor`, read until (kind, branch name) `until` is seen:
    the journal writes an event just after the change it reports."""
    req = pb.WatchEventsRequest(cursor=cursor, follow=True)
    out = []
    for event in stub.WatchEvents(req, timeout=60):
        if event.database_name == db:
            out.append(event)
            if (event.kind, event.branch_name) == until:
                return out
    raise AssertionError(f"the stream ended before {until}")


def newest_cursor(stub: Stub) -> int:
    replay = list(stub.WatchEvents(pb.WatchEventsRequest(from_oldest=True), timeout=30))
    return replay[-1].cursor if replay else 0


def test_bad_ttls_name_their_field(stub: Stub) -> None:
    db = unique()
    stub.CreateDatabase(pb.CreateDatabaseRequest(name=db))
    for seconds in (0, -5):
        req = pb.CreateBranchRequest(database=db, name="b", ttl=Duration(seconds=seconds))
        err = error_of(partial(stub.CreateBranch, req))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith("ttl:"), err.details()
    past = pb.UpdateBranchRequest(branch=ref(db, "main"))
    past.expires_at.FromSeconds(int(time.time()) - 60)
    err = error_of(lambda: stub.UpdateBranch(past))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("expires_at:"), err.details()
    both = pb.UpdateBranchRequest(branch=ref(db, "main"), ttl=Duration(seconds=60),
                                  clear_expiry=True)
    assert error_of(lambda: stub.UpdateBranch(both)).code() == grpc.StatusCode.INVALID_ARGUMENT
    err = error_of(lambda: stub.UpdateBranch(
        pb.UpdateBranchRequest(branch=ref(db, "main"), ttl=Duration(seconds=60))))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "never expires" in err.details()
    assert names(stub, db) == {"main"}


def short(seconds: float) -> Duration:
    """A TTL below a second: the loop runs every 0.2 s here."""
    return Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))


class BranchUpdate(TypedDict, total=False):
    """The fields of UpdateBranchRequest these tests change."""
    ttl: Duration
    protection: pb.ProtectionChange.ValueType
    protect_for: Duration


def update(stub: Stub, db: str, name: str, **fields: Unpack[BranchUpdate]) -> pb.Branch:
    updated: pb.Branch = stub.UpdateBranch(pb.UpdateBranchRequest(branch=ref(db, name), **fields))
    return updated


@pytest.fixture(scope="module")
def shop(fast: Daemon) -> str:
    """One database for the tests below, each with branches of its own."""
    name = unique()
    with fast.stub() as s:
        s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"))
    return name


def test_expired_branch_goes_with_its_branch_point_and_events(fast: Daemon, stub: Stub,
                                                              shop: str) -> None:
    cursor = newest_cursor(stub)
    b = branch(stub, shop, "pr-1", ttl=1)
    assert b.HasField("expires_at") and b.effective_expires_at == b.expires_at
    origin = b.origin_snapshot
    wait_for(lambda: "pr-1" not in names(stub, shop), "pr-1 expired")
    kinds = [e.kind for e in events_since(stub, cursor, shop, ("deleted", "pr-1"))
             if e.branch_name == "pr-1"]
    assert kinds == ["created", "ready", "expired", "deleted"]
    snapshots = run("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r",
                    fast.pool.name).stdout
    assert origin not in snapshots  # the branch point nothing else needs is gone


def test_a_parent_waits_for_its_children(stub: Stub, shop: str) -> None:
    branch(stub, shop, "feature")
    branch(stub, shop, "child", parent="feature")  # no expiry: holds its parent
    parent = update(stub, shop, "feature", ttl=short(0.3))
    time.sleep(1.0)  # past the parent's own expiry: several sweeps
    assert {"feature", "child"} <= names(stub, shop)
    shown = stub.GetBranch(pb.GetBranchRequest(branch=ref(shop, "feature")))
    assert shown.expires_at == parent.expires_at and not shown.HasField("effective_expires_at")
    cursor = newest_cursor(stub)
    child = update(stub, shop, "child", ttl=short(0.5))
    shown = stub.GetBranch(pb.GetBranchRequest(branch=ref(shop, "feature")))
    assert shown.effective_expires_at == child.expires_at  # the latest of its tree
    wait_for(lambda: not {"feature", "child"} & names(stub, shop), "the tree expired")
    deleted = [e.branch_name for e in events_since(stub, cursor, shop, ("deleted", "feature"))
               if e.kind == "deleted"]
    assert deleted == ["child", "feature"]  # children first


def test_protection_blocks_delete_reset_and_expiry(fast: Daemon, stub: Stub, shop: str) -> None:
    branch(stub, shop, "keep")
    shown = update(stub, shop, "keep", protection=pb.PROTECTION_CHANGE_PROTECT)
    assert shown.protected and not shown.HasField("protected_until")
    shown = update(stub, shop, "keep", ttl=short(0.3))
    assert shown.HasField("expires_at") and not shown.HasField("effective_expires_at")
    time.sleep(1.0)  # past its expiry: several sweeps
    assert "keep" in names(stub, shop)
    for call in (lambda: stub.DeleteBranch(pb.DeleteBranchRequest(branch=ref(shop, "keep"))),
                 lambda: stub.ResetBranch(pb.ResetBranchRequest(branch=ref(shop, "keep"))),
                 lambda: stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=shop))):
        err = error_of(call)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "is protected" in err.details() and "override_protection" in err.details()
    assert "keep" in names(stub, shop)
    with fast.tls_channel("operator") as ch:
        operator = pb_grpc.AgentStub(ch)  # type: ignore[no-untyped-call]
        err = error_of(lambda: operator.DeleteBranch(pb.DeleteBranchRequest(
            branch=ref(shop, "keep"), override_protection=True)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "admin" in err.details()
        err = error_of(lambda: operator.UpdateBranch(pb.UpdateBranchRequest(
            branch=ref(shop, "keep"), protection=pb.PROTECTION_CHANGE_UNPROTECT)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "keep" in names(stub, shop)
    with fast.tls_channel("admin") as ch:
        pb_grpc.AgentStub(ch).DeleteBranch(pb.DeleteBranchRequest(  # type: ignore[no-untyped-call]
            branch=ref(shop, "keep"), override_protection=True))
    assert "keep" not in names(stub, shop)


def test_a_protection_lease_lapses_and_the_branch_expires(stub: Stub, shop: str) -> None:
    branch(stub, shop, "lease")
    update(stub, shop, "lease", protection=pb.PROTECTION_CHANGE_PROTECT,
           protect_for=short(1.0))
    shown = update(stub, shop, "lease", ttl=short(0.2))
    assert shown.protected and shown.effective_expires_at == shown.protected_until
    wait_for(lambda: "lease" not in names(stub, shop),
             "the lease lapsed and the branch expired")


def test_cli_ttl_protection_and_events(fast: Daemon) -> None:
    db = unique()
    cygnet(fast, "db", "create", db, "--size", "nano")
    for bad in ("0d", "-1h", "soon"):
        result = cygnet(fast, "branch", "create", f"{db}/pr", "--ttl", bad, expect=2)
        assert "--ttl" in result.err and "Traceback" not in result.err
    made = cygnet(fast, "branch", "create", f"{db}/pr", "--ttl", "7d", "--json").json()
    assert made["branch"]["expires_at"] and not made["branch"]["protected"]
    cygnet(fast, "branch", "update", f"{db}/pr", "--protect-for", "1d")
    listing = cygnet(fast, "branch", "list", db).out
    row = next(line for line in listing.splitlines() if " pr " in line)
    assert "in 6d23h" in row and "in 23h5" in row  # expires, protected until
    refused = cygnet(fast, "branch", "rm", f"{db}/pr", expect=4)
    assert_one_error_line(refused, "is protected", "override_protection")
    refused = cygnet(fast, "db", "rm", db, "--yes", expect=4)
    assert_one_error_line(refused, f"branch '{db}/pr' is protected")
    cygnet(fast, "branch", "rm", f"{db}/pr", "--override-protection")  # the socket is admin
    lines = cygnet(fast, "events", "--json").out.splitlines()
    mine = [json.loads(line) for line in lines if f'"{db}"' in line]
    assert [(e["kind"], e["branch_name"]) for e in mine][-3:] == [
        ("created", "pr"), ("ready", "pr"), ("deleted", "pr")]
    since = cygnet(fast, "events", "--since", str(mine[-2]["cursor"])).out
    assert f"deleted    {db}/pr" in since and "created" not in since
    gone = cygnet(fast, "events", "--since", "999999999", expect=2)
    assert_one_error_line(gone, "newer than this host's newest event")
