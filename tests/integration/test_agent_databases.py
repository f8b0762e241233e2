"""Databases through the real gRPC API, on a real pool, with real Postgres."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable

import grpc
import psycopg
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, postmasters_under, query

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub


def field_of(err: grpc.RpcError) -> str:
    field: str = dict(err.trailing_metadata() or ()).get("cygnet-field", "")
    return field


def test_create_database_answers_queries_with_its_password(stub: Stub, daemon: Daemon) -> None:
    name = unique()
    resp = stub.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                               timeout=120)
    assert resp.database.name == name and resp.database.size_class == "nano"
    assert resp.main_branch.name == "main"
    assert resp.main_branch.state == pb.BRANCH_STATE_RUNNING
    assert resp.connection.password and resp.connection.port == resp.main_branch.port
    assert query(resp.connection, "select 41 + 1") == [(42,)]
    assert query(resp.connection, "show shared_buffers") == [("16MB",)]
    with pytest.raises(psycopg.OperationalError):
        query(resp.connection, "select 1", password="wrong")
    got = stub.GetDatabase(pb.GetDatabaseRequest(database=resp.database.id))
    assert got.name == name and got.main_branch_id == resp.main_branch.id
    listed = stub.ListDatabases(pb.ListDatabasesRequest()).databases
    assert resp.database.id in {d.id for d in listed}


def test_delete_database_removes_datasets_and_processes(stub: Stub, daemon: Daemon) -> None:
    resp = stub.CreateDatabase(pb.CreateDatabaseRequest(name=unique()), timeout=120)
    stub.CreateBranch(pb.CreateBranchRequest(database=resp.database.id, name="child"),
                      timeout=60)
    before = [d for d in daemon.pool.datasets() if resp.database.id in d]
    assert len(before) >= 3
    deleted = stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=resp.database.name))
    assert len(deleted.deleted_branch_ids) == 2
    assert not [d for d in daemon.pool.datasets() if resp.database.id in d]
    db_mount = daemon.mount_root / daemon.pool.name / "db" / resp.database.id
    assert not postmasters_under(db_mount)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDatabase(pb.GetDatabaseRequest(database=resp.database.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_same_name_twice_is_already_exists(stub: Stub) -> None:
    name = unique()
    stub.CreateDatabase(pb.CreateDatabaseRequest(name=name), timeout=120)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateDatabase(pb.CreateDatabaseRequest(name=name), timeout=120)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert name in err.value.details()


def test_concurrent_creates_with_one_name_make_one_database(daemon: Daemon) -> None:
    name = unique()

    def create() -> grpc.StatusCode:
        with daemon.stub() as s:
            try:
                s.CreateDatabase(pb.CreateDatabaseRequest(name=name), timeout=120)
                return grpc.StatusCode.OK
            except grpc.RpcError as err:
                return err.code()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: create(), range(4)))
    assert codes.count(grpc.StatusCode.OK) == 1
    assert codes.count(grpc.StatusCode.ALREADY_EXISTS) == 3
    with daemon.stub() as s:
        named = [d for d in s.ListDatabases(pb.ListDatabasesRequest()).databases
                 if d.name == name]
    assert len(named) == 1


def test_retry_with_same_request_id_returns_first_result(stub: Stub) -> None:
    rid = str(uuid.uuid4())
    req = pb.CreateDatabaseRequest(name=unique(), request_id=rid)
    first = stub.CreateDatabase(req, timeout=120)
    second = stub.CreateDatabase(req, timeout=120)
    assert second.database.id == first.database.id
    assert second.connection.uri == first.connection.uri
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=first.database.id,
                                                     request_id=rid))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(err.value) == "request_id"


BAD_NAMES = ["", "x" * 64, "a/b", "a@b", "a..b", "tab\there", "nul\x00", "bell\x07",
             " padded", "-dash"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_refused_naming_the_field(stub: Stub, daemon: Daemon, bad: str) -> None:
    before = daemon.pool.datasets()
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateDatabase(pb.CreateDatabaseRequest(name=bad), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("name: ")
    assert field_of(err.value) == "name"
    assert daemon.pool.datasets() == before


def test_invalid_utf8_name_is_refused(daemon: Daemon) -> None:
    # protobuf refuses to build such a message in Python, so send raw bytes.
    raw = b"\x0a\x03\xff\xfe\x41"  # field 1 (name), 3 bytes of invalid UTF-8
    with daemon.channel() as ch:
        call = ch.unary_unary("/cygnet.v1.Agent/CreateDatabase",
                              request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(raw, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "name: must be valid UTF-8"
    assert field_of(err.value) == "name"


@pytest.mark.parametrize(("field", "req"), [
    ("postgres_version", pb.CreateDatabaseRequest(name="v", postgres_version="99")),
    ("size_class", pb.CreateDatabaseRequest(name="v", size_class="huge")),
    ("pool", pb.CreateDatabaseRequest(name="v", pool="nosuchpool")),
])
def test_unknown_version_size_or_pool(stub: Stub, daemon: Daemon, field: str,
                                      req: pb.CreateDatabaseRequest) -> None:
    before = daemon.pool.datasets()
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateDatabase(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}: ")
    assert daemon.pool.datasets() == before


def test_unknown_ids_are_not_found(stub: Stub) -> None:
    calls: list[Callable[[], object]] = [
        lambda: stub.GetDatabase(pb.GetDatabaseRequest(database="dbnothere")),
        lambda: stub.DeleteDatabase(pb.DeleteDatabaseRequest(database="dbnothere")),
        lambda: stub.GetBranch(pb.GetBranchRequest(
            branch=pb.BranchRef(branch_id="br0000000000"))),
        lambda: stub.GetDatabase(pb.GetDatabaseRequest(database="db0000000000")),
        lambda: stub.CreateBranch(pb.CreateBranchRequest(database="dbnothere", name="x")),
        lambda: stub.ListSnapshots(pb.ListSnapshotsRequest(
            branch=pb.BranchRef(database="dbnothere"))),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()


def test_host_status(stub: Stub, daemon: Daemon) -> None:
    status = stub.GetHostStatus(pb.GetHostStatusRequest())
    assert [p.name for p in status.pools] == [daemon.pool.name]
    pool = status.pools[0]
    assert pool.size_bytes > pool.free_bytes > 0 and pool.health == "ONLINE"
    assert "15" in status.postgres_versions
    assert status.zfs_dialect in ("zfs-fuse", "openzfs")
    running = [b for b in stub.ListBranches(pb.ListBranchesRequest()).branches
               if b.state == pb.BRANCH_STATE_RUNNING]
    assert status.running_clusters == len(running)
    assert status.branch_count >= len(running)


def test_a_name_shaped_like_an_id_is_refused(stub: Stub) -> None:
    # `db create victim`, then `db create <victim's id>` and `db rm <victim's id>`
    # used to delete victim.
    victim = stub.CreateDatabase(pb.CreateDatabaseRequest(name=unique(), size_class="nano"),
                                 timeout=120)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateDatabase(pb.CreateDatabaseRequest(name=victim.database.id), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(err.value) == "name" and "id" in err.value.details()
    for bad in ("db0123456789", "br0123456789", "sn0123456789",
                "20261125T211520123456Z-0a1b2c3d"):
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateBranch(pb.CreateBranchRequest(database=victim.database.id, name=bad),
                              timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert field_of(err.value) == "name"
    # An id of another kind where a database is expected names nothing.
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=victim.main_branch.id))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(err.value) == "database"
    assert stub.GetDatabase(pb.GetDatabaseRequest(database=victim.database.id)).name


@pytest.mark.parametrize(("call", "field"), [
    ("DeleteDatabase", "database"), ("GetDatabase", "database"), ("CreateBranch", "database"),
    ("GetBranch", "branch"), ("CreateSnapshot", "branch"), ("DeleteSnapshot", "branch"),
])
def test_empty_requests_name_the_missing_field(stub: Stub, call: str, field: str) -> None:
    request = getattr(pb, f"{call}Request")()
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, call)(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(err.value) == field


def test_a_huge_reference_is_refused_briefly(stub: Stub) -> None:
    huge = "x" * 20_000
    for request, call in ((pb.GetDatabaseRequest(database=huge), stub.GetDatabase),
                          (pb.GetBranchRequest(branch=pb.BranchRef(database="d", name=huge)),
                           stub.GetBranch)):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(err.value.details()) < 200
