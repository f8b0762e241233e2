"""`cygnet backup ...` and `cygnet branch diff` end to end: --json shapes, tables, exit codes."""

from __future__ import annotations

from typing import Any

import pytest

from cygnet.api.v1 import agent_pb2 as pb
from tests.conftest import unique
from tests.harness import Daemon, query
from tests.integration.test_cli_support import (
    ANSI,
    BRANCH_KEYS,
    CONFLICT,
    CONNECTION_KEYS,
    DATABASE_KEYS,
    ERROR,
    INVALID,
    ISO_UTC,
    NOT_FOUND,
    assert_one_error_line,
    cygnet,
)

pytestmark = pytest.mark.integration

BACKUP_KEYS = {"id", "database_id", "database_name", "branch_id", "branch_name",
               "postgres_version", "size_class", "snapshot_at", "created_at", "file_count",
               "logical_bytes", "new_bytes", "new_blocks", "block_count", "duration_seconds",
               "trigger"}
VERIFY_KEYS = {"ok", "packs_checked", "blocks_checked", "bytes_checked", "manifests_checked",
               "unreferenced_blocks", "issues", "garbage"}
RELATION_KEYS = {"database", "schema", "name", "kind", "database_oid", "relfilenode", "status",
                 "changed_pages", "pages_before", "pages_after", "fsm_changed_pages",
                 "vm_changed_pages"}


def test_backup_commands(daemon: Daemon) -> None:
    name = unique("bk")
    with daemon.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                              timeout=120)
    query(db.connection, "create table t (id int primary key, v text);"
                         "insert into t select g, md5(g::text) from generate_series(1, 20000) g")
    made = cygnet(daemon, "backup", "create", name, "--json").json()
    assert set(made) == BACKUP_KEYS and made["database_name"] == name
    assert made["branch_name"] == "main" and ISO_UTC.fullmatch(made["snapshot_at"])
    listed = cygnet(daemon, "backup", "list", name, "--json").json()
    assert [b["id"] for b in listed] == [made["id"]]
    table = cygnet(daemon, "backup", "list", name, "--branch", "main").out
    assert made["id"] in table and f"{name}/main" in table and not ANSI.search(table)
    report = cygnet(daemon, "backup", "verify", "--json").json()
    assert set(report) == VERIFY_KEYS and report["ok"] is True and report["issues"] == []
    assert "OK" in cygnet(daemon, "backup", "verify").out
    query(db.connection, "delete from t where id > 10000")
    done = cygnet(daemon, "backup", "restore", made["id"], "--branch", "back", "--json").json()
    assert set(done) == {"database", "branch", "connection", "bytes_written",
                         "duration_seconds"}
    assert set(done["database"]) == DATABASE_KEYS and set(done["branch"]) == BRANCH_KEYS
    assert set(done["connection"]) == CONNECTION_KEYS
    assert done["branch"]["state"] == "running" and done["branch"]["origin_snapshot"] is None
    conn = pb.Connection(uri=done["connection"]["uri"], password=done["connection"]["password"])
    assert query(conn, "select count(*) from t") == [(20000,)]
    _errors(daemon, name, made["id"])
    _diff(daemon, name, db.connection)
    pruned = cygnet(daemon, "backup", "prune", "--keep-last", "0", "--db", name, "--yes",
                    "--json").json()
    assert pruned["deleted_backup_ids"] == [made["id"]]
    assert set(pruned) == {"deleted_backup_ids", "packs_deleted", "packs_rewritten",
                           "blocks_removed", "bytes_freed"}
    assert cygnet(daemon, "backup", "list", name, "--json").json() == []


def _errors(daemon: Daemon, name: str, backup_id: str) -> None:
    r = cygnet(daemon, "backup", "restore", backup_id, expect=INVALID)
    assert_one_error_line(r, "--branch")
    r = cygnet(daemon, "backup", "restore", "nonsense", "--branch", "x", expect=INVALID)
    assert_one_error_line(r, "backup_id")
    r = cygnet(daemon, "backup", "restore", "20260101T000000000000Z-00000000", "--db", "x",
               expect=NOT_FOUND)
    assert_one_error_line(r)
    r = cygnet(daemon, "backup", "restore", backup_id, "--branch", "back", expect=CONFLICT)
    assert_one_error_line(r, "back")
    assert_one_error_line(cygnet(daemon, "backup", "prune", expect=INVALID), "--keep-last")
    r = cygnet(daemon, "backup", "create", f"{name}/nope", expect=NOT_FOUND)
    assert_one_error_line(r, "nope")
    # A restored branch has no origin snapshot to compare with.
    r = cygnet(daemon, "branch", "diff", f"{name}/back", expect=CONFLICT)
    assert_one_error_line(r, "origin")


def _diff(daemon: Daemon, name: str, main: pb.Connection) -> None:
    feat = cygnet(daemon, "branch", "create", f"{name}/feat", "--json").json()
    conn = pb.Connection(uri=feat["connection"]["uri"], password=feat["connection"]["password"])
    query(conn, "update t set v = 'x' where id <= 100")
    shown: dict[str, Any] = cygnet(daemon, "branch", "diff", f"{name}/feat", "--json").json()
    assert set(shown) == {"old", "new", "changed_pages", "pages_compared", "relations",
                          "other_files"}
    assert shown["old"] == f"{name}/feat@origin" and shown["new"] == f"{name}/feat"
    rel = {(r["schema"], r["name"]): r for r in shown["relations"]}
    assert set(rel[("public", "t")]) == RELATION_KEYS
    assert rel[("public", "t")]["kind"] == "table" and rel[("public", "t")]["changed_pages"] > 0
    between = cygnet(daemon, "branch", "diff", f"{name}/main", "feat", "--json").json()
    assert between["old"] == f"{name}/main" and between["new"] == f"{name}/feat"
    table = cygnet(daemon, "branch", "diff", f"{name}/feat").out
    assert "public.t" in table and "CHANGED PAGES" in table and not ANSI.search(table)


def test_verify_exit_code_on_damage(daemon: Daemon) -> None:
    name = unique("bkv")
    with daemon.stub() as s:
        s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"), timeout=120)
    made = cygnet(daemon, "backup", "create", name, "--json").json()
    # Every pack is damaged: the backup's blocks may all live in packs that earlier
    # backups of identical data wrote, not in the newest one.
    packs = daemon.base / "state" / "backups" / "packs"
    originals = {pack: pack.read_bytes() for pack in packs.glob("*.pack")}
    for pack, original in originals.items():
        pack.write_bytes(original[:4096] + bytes(512) + original[4096 + 512:])
    try:
        r = cygnet(daemon, "backup", "verify", "--json", expect=ERROR)
        assert r.json()["ok"] is False and r.json()["issues"]
        r = cygnet(daemon, "backup", "restore", made["id"], "--db", unique("bad"), expect=ERROR)
        assert_one_error_line(r, made["id"])
    finally:
        for pack, original in originals.items():
            pack.write_bytes(original)
    cygnet(daemon, "backup", "prune", made["id"], "--yes")
    cygnet(daemon, "db", "rm", name, "--yes")
