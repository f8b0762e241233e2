"""Backups of a live directory: files that vanish, shrink or grow while read, what
is left out of a data directory, and the files a finished backup adds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cygnet import backup
from cygnet.agent.backups.live import skip, wal_items
from cygnet.backup import create as create_mod
from cygnet.backup import store
from cygnet.backup.create import LiveCopy
from cygnet.backup.manifest import Entry
from cygnet.backup.models import Metadata
from cygnet.backup.tree import SourceItem, scan

BLOCK = 8192


def make_pgdata(root: Path) -> Path:
    pgdata = root / "pgdata"
    for d in ("base/1", "global", "pg_wal/archive_status", "pg_stat_tmp", "pg_replslot/s"):
        (pgdata / d).mkdir(parents=True)
    (pgdata / "base/1/1259").write_bytes(os.urandom(3 * BLOCK))
    (pgdata / "base/1/pg_internal.init").write_bytes(b"x")
    (pgdata / "base/1/pgsql_tmp123").write_bytes(b"x")
    (pgdata / "global/pg_control").write_bytes(os.urandom(BLOCK))
    (pgdata / "postmaster.pid").write_text("1\n")
    (pgdata / "PG_VERSION").write_text("15\n")
    (pgdata / "pg_stat_tmp/global.stat").write_bytes(b"x")
    (pgdata / "pg_replslot/s/state").write_bytes(b"x")
    for seg in ("000000010000000000000001", "000000010000000000000002",
                "000000010000000000000003", "000000010000000000000009"):
        (pgdata / "pg_wal" / seg).write_bytes(bytes(BLOCK))
    (pgdata / "pg_wal/00000002.history").write_text("1\t0/3000000\tno recovery target\n")
    return pgdata


def test_skip_leaves_out_runtime_state_but_keeps_the_directories(tmp_path: Path) -> None:
    pgdata = make_pgdata(tmp_path)
    paths = {i.entry.path for i in scan(pgdata, skip)}
    assert {"base/1/1259", "global/pg_control", "PG_VERSION", "pg_wal", "pg_stat_tmp",
            "pg_replslot"} <= paths
    assert not {p for p in paths if p.startswith(("pg_wal/", "pg_stat_tmp/", "pg_replslot/"))}
    assert not {"postmaster.pid", "base/1/pg_internal.init", "base/1/pgsql_tmp123"} & paths


def test_wal_items_are_the_backups_segments_and_history(tmp_path: Path) -> None:
    pgdata = make_pgdata(tmp_path)
    names = [i.entry.path for i in wal_items(pgdata, "000000010000000000000002",
                                             "000000010000000000000003")]
    assert names == ["pg_wal/000000010000000000000002", "pg_wal/000000010000000000000003",
                     "pg_wal/00000002.history"]
    with pytest.raises(RuntimeError, match="000000010000000000000004"):
        wal_items(pgdata, "000000010000000000000002", "000000010000000000000004")


def test_live_backup_tolerates_changes_and_restores_the_added_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pgdata = make_pgdata(tmp_path)
    repo = tmp_path / "repo"
    rel = pgdata / "base/1/1259"
    label = tmp_path / "label"
    label.write_text("START WAL LOCATION: 0/2000028\n")

    def finish() -> tuple[list[SourceItem], Metadata]:
        wal = wal_items(pgdata, "000000010000000000000001", "000000010000000000000002")
        st = label.stat()
        entry = Entry("backup_label", "file", 0o600, st.st_mtime_ns, size=st.st_size)
        return [*wal, SourceItem(label, entry)], {"live": True}

    # Dropped and truncated while the backup runs: listed first, changed before read.
    items = list(scan(pgdata, skip))
    (pgdata / "PG_VERSION").unlink()
    with open(rel, "r+b") as f:
        f.truncate(BLOCK)
    monkeypatch.setattr(create_mod, "scan", lambda source, skip=None: iter(items))
    info = backup.create_backup(repo, pgdata, {"database": "d"}, live=LiveCopy(skip, finish))
    assert info.metadata["live"] is True
    out = tmp_path / "out"
    backup.restore(repo, info.backup_id, out)
    assert not (out / "PG_VERSION").exists()
    assert (out / "base/1/1259").stat().st_size == BLOCK  # the size when it was opened
    assert (out / "backup_label").read_text() == label.read_text()
    assert sorted(os.listdir(out / "pg_wal")) == [
        "000000010000000000000001", "000000010000000000000002", "00000002.history"]
    assert not (out / "postmaster.pid").exists()


def test_a_snapshot_source_that_changes_is_still_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pgdata = make_pgdata(tmp_path)
    items = list(scan(pgdata))
    (pgdata / "PG_VERSION").unlink()
    monkeypatch.setattr(store, "scan", lambda source, skip=None: iter(items))
    with pytest.raises(FileNotFoundError):
        backup.create_backup(tmp_path / "repo", pgdata, {"database": "d"})
