"""Backups of branches through the API: create, list, verify, restore, prune, diff.

One daemon of its own (port range 59500-59699); the tests build on one
repository, in file order.
"""

from __future__ import annotations

from typing import Any, Unpack, cast

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from tests.harness import Daemon, query
from tests.integration.backup_helpers import (
    RestoreFields,
    RestoreTarget,
    backups,
    bdaemon,
    checksums,
    create_backup,
    fill,
    restore,
    rpc_error,
    run_stream,
    temp_datasets,
    verify,
)

pytestmark = pytest.mark.integration
__all__ = ["bdaemon"]

TABLES = ["big", "small"]
STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def source(bdaemon: Daemon) -> pb.CreateDatabaseResponse:
    with bdaemon.stub() as s:
        db: pb.CreateDatabaseResponse = s.CreateDatabase(
            pb.CreateDatabaseRequest(name="src", size_class="nano"), timeout=120)
    fill(db.connection, "big", 150_000)
    fill(db.connection, "small", 1_000)
    return db


def test_create_list_verify(bdaemon: Daemon, source: pb.CreateDatabaseResponse) -> None:
    ref = pb.BranchRef(database="src")
    STATE["sums"] = checksums(source.connection, TABLES)
    req = bpb.CreateBackupRequest(branch=ref)
    progress, first = run_stream(backups(bdaemon).CreateBackup(req, timeout=300))
    assert progress and {p.phase for p in progress} >= {"snapshot", "read"}
    assert first.database_name == "src" and first.branch_name == "main"
    assert first.database_id == source.database.id and first.postgres_version
    assert first.size_class == "nano" and first.snapshot_at.seconds > 0
    assert first.logical_bytes > 20 << 20 and first.new_bytes > 0
    STATE["first"] = first
    # Changed after the backup: a restore must not see these rows.
    query(source.connection, "update small set v = 'changed' where id <= 10")
    second = create_backup(bdaemon, ref)
    assert second.new_bytes < first.new_bytes * 0.1, (second.new_bytes, first.new_bytes)
    STATE["second"] = second
    listed = backups(bdaemon).ListBackups(bpb.ListBackupsRequest(database="src")).backups
    assert [b.id for b in listed] == [first.id, second.id]
    # An unknown database is NOT_FOUND, not an empty list.
    with pytest.raises(grpc.RpcError) as err:
        backups(bdaemon).ListBackups(bpb.ListBackupsRequest(database="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    report = verify(bdaemon)
    assert report.ok and report.manifests_checked == 2 and report.blocks_checked > 0
    assert not temp_datasets(bdaemon)


def test_restore_into_new_branch(bdaemon: Daemon) -> None:
    done = restore(bdaemon, STATE["first"].id, branch_name="restored")
    assert done.branch.name == "restored" and done.branch.database_name == "src"
    assert done.branch.state == pb.BRANCH_STATE_RUNNING and done.bytes_written > 0
    assert checksums(done.connection, TABLES) == STATE["sums"]
    assert not temp_datasets(bdaemon)


def test_restore_into_new_database(bdaemon: Daemon, source: pb.CreateDatabaseResponse) -> None:
    done = restore(bdaemon, STATE["first"].id, database_name="copy")
    assert done.database.name == "copy" and done.branch.name == "main"
    assert done.database.postgres_version == source.database.postgres_version
    assert done.connection.password != source.connection.password
    assert checksums(done.connection, TABLES) == STATE["sums"]
    # Writable, and a real database: it branches.
    query(done.connection, "insert into small values (0, 'new')")
    with bdaemon.stub() as s:
        child = s.CreateBranch(pb.CreateBranchRequest(database="copy", name="c"), timeout=60)
    assert query(child.connection, "select count(*) from small") == [(1001,)]


def test_restore_refuses_bad_requests(bdaemon: Daemon) -> None:
    stub = backups(bdaemon)
    first = STATE["first"].id

    def call(**kw: Unpack[RestoreFields]) -> grpc.RpcError:
        req = bpb.RestoreBackupRequest(**kw)
        return rpc_error(lambda: list(stub.RestoreBackup(req, timeout=60)))

    err = call(backup_id=first, branch_name="x", database_name="y")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "branch_name" in err.details()
    err = call(backup_id="../../etc", branch_name="x")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "backup_id" in err.details()
    err = call(backup_id="20260101T000000000000Z-00000000", branch_name="x")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = call(backup_id=first, branch_name="restored")
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    err = call(backup_id=first, branch_name="bad/name")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "name" in err.details()
    ref = pb.BranchRef(database="src", name="nope")
    err = rpc_error(lambda: list(stub.CreateBackup(bpb.CreateBackupRequest(branch=ref))))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_prune_keeps_what_is_referenced(bdaemon: Daemon, source: pb.CreateDatabaseResponse
                                        ) -> None:
    ref = pb.BranchRef(database="src")
    third = create_backup(bdaemon, ref)
    stub = backups(bdaemon)
    err = rpc_error(lambda: stub.PruneBackups(bpb.PruneBackupsRequest(backup_ids=["x"])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "backup_ids" in err.details()
    pruned = stub.PruneBackups(bpb.PruneBackupsRequest(keep_last=1, database="src"))
    assert set(pruned.deleted_backup_ids) == {STATE["first"].id, STATE["second"].id}
    listed = [b.id for b in stub.ListBackups(bpb.ListBackupsRequest()).backups]
    assert listed == [third.id]
    report = verify(bdaemon)
    assert report.ok and report.unreferenced_blocks == 0
    # Everything the remaining backup needs is still there.
    done = restore(bdaemon, third.id, branch_name="after-prune")
    assert checksums(done.connection, TABLES) == checksums(source.connection, TABLES)
    STATE["third"] = third


def test_branch_diff_names_the_changed_table(bdaemon: Daemon,
                                             source: pb.CreateDatabaseResponse) -> None:
    conn = source.connection
    query(conn, "create table other (id int primary key, v text);"
                "insert into other select g, 'o' from generate_series(1, 5000) g")
    for table in ("big", "other", "small"):  # hint bits set now, not by the branch's reads
        query(conn, f"vacuum freeze {table}")
    with bdaemon.stub() as s:
        b = s.CreateBranch(pb.CreateBranchRequest(database="src", name="work"), timeout=60)
    before = query(b.connection, "select distinct (ctid::text::point)[0]::int from big"
                                 " where id % 1000 = 0")
    query(b.connection, "update big set v = 'touched' where id % 1000 = 0")
    after = query(b.connection, "select distinct (ctid::text::point)[0]::int from big"
                                " where id % 1000 = 0")
    pages = {cast(int, p) for (p,) in before} | {cast(int, p) for (p,) in after}
    stub = backups(bdaemon)
    work = pb.BranchRef(database="src", name="work")
    req = bpb.DiffBranchesRequest(branch=work)
    _, diff = run_stream(stub.DiffBranches(req, timeout=120))
    assert diff.old == "src/work@origin" and diff.new == "src/work"
    tables = {(r.schema, r.name): r for r in diff.relations if r.kind == "table"}
    assert ("public", "big") in tables and ("public", "other") not in tables
    assert ("public", "small") not in tables
    big = tables[("public", "big")]
    assert big.status == "modified" and big.database == "postgres"
    assert big.changed_pages == len(pages), (big.changed_pages, sorted(pages))
    # Between two branches: main did not change `big`, so the same pages differ.
    req = bpb.DiffBranchesRequest(branch=work, other=pb.BranchRef(database="src"))
    _, between = run_stream(stub.DiffBranches(req, timeout=120))
    assert between.old == "src/main" and between.new == "src/work"
    names = {(r.schema, r.name): r for r in between.relations if r.kind == "table"}
    assert names[("public", "big")].changed_pages == len(pages)
    assert ("public", "other") not in names
    assert not temp_datasets(bdaemon)


def test_corrupt_pack_is_found_and_refused(bdaemon: Daemon) -> None:
    repo = bdaemon.base / "state" / "backups"
    pack = max((repo / "packs").glob("*.pack"), key=lambda p: p.stat().st_size)
    original = pack.read_bytes()
    middle = len(original) // 2
    pack.write_bytes(original[:middle] + bytes(256) + original[middle + 256:])
    try:
        report = verify(bdaemon)
        assert not report.ok and any(i.path == pack.name for i in report.issues)
        before = set(bdaemon.pool.datasets())
        stub = backups(bdaemon)
        targets: tuple[RestoreTarget, ...] = ({"branch_name": "broken"},
                                              {"database_name": "broken"})
        for target in targets:
            req = bpb.RestoreBackupRequest(backup_id=STATE["third"].id, **target)
            err = rpc_error(lambda req=req: list(stub.RestoreBackup(req, timeout=120)))
            assert err.code() == grpc.StatusCode.DATA_LOSS, err.details()
            assert "does not match" in err.details() or "decompress" in err.details()
        assert set(bdaemon.pool.datasets()) == before
        with bdaemon.stub() as s:
            names = {b.name for b in s.ListBranches(pb.ListBranchesRequest()).branches}
        assert "broken" not in names
    finally:
        pack.write_bytes(original)
    assert verify(bdaemon).ok
