"""What differs between majors: settings, initdb flags, checksums for pg_upgrade, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.upgrade import check_parent
from cygnet.errors import FailedPrecondition, InvalidArgument
from cygnet.postgres.config import ClusterSettings, render_settings
from cygnet.postgres.initdb import initdb_argv
from cygnet.postgres.sizes import size_class
from cygnet.postgres.upgrade import _checksums_flag
from tests.unit.test_pg_versions_sizes import fake_install


def settings_text(major: int) -> str:
    return render_settings(ClusterSettings(port=5432, listen_addresses="127.0.0.1",
                                           socket_dir=Path("/run/x"), size=size_class("nano"),
                                           major=major))


def test_settings_only_the_majors_that_know_them() -> None:
    assert "summarize_wal" not in settings_text(15) and "io_method" not in settings_text(16)
    assert "summarize_wal = off" in settings_text(17) and "io_method" not in settings_text(17)
    assert "summarize_wal = off" in settings_text(18)
    assert "io_method = worker" in settings_text(18)


def test_initdb_checksum_and_sync_flags() -> None:
    base = initdb_argv(Path("/b"), Path("/d"))
    assert not any("checksums" in a or "sync" in a for a in base)
    assert initdb_argv(Path("/b"), Path("/d"), False, sync=False)[-2:] == [
        "--no-data-checksums", "--no-sync"]
    assert "--data-checksums" in initdb_argv(Path("/b"), Path("/d"), True)


def test_the_new_cluster_matches_the_old_checksums() -> None:
    off, on = {"Data page checksum version": "0"}, {"Data page checksum version": "1"}
    assert _checksums_flag(off, 18) is False  # 18 would turn them on
    assert _checksums_flag(on, 18) is None
    assert _checksums_flag(off, 17) is None
    assert _checksums_flag(on, 16) is True


def records(branch_version: str = "") -> tuple[DatabaseRecord, BranchRecord]:
    db = DatabaseRecord("db1", "shop", "p/db1", "p", "15", "small", "ready", 0.0, "")
    br = BranchRecord("br1", "main", "db1", "", "p/db1/br1", None, 54000, "running", "ready",
                      0.0, "", 0, 0, version=branch_version)
    db.branches[br.id] = br
    return db, br


def test_check_parent_refusals_name_the_versions(tmp_path: Path) -> None:
    for v in ("15", "16", "18"):
        fake_install(tmp_path, v)
    db, main = records()
    assert check_parent(db, main, "", tmp_path) == ""
    assert check_parent(db, main, "18", tmp_path) == "18"
    with pytest.raises(InvalidArgument, match=r"PostgreSQL 17 is not installed.*15, 16, 18"):
        check_parent(db, main, "17", tmp_path)
    with pytest.raises(InvalidArgument, match="already runs PostgreSQL 15"):
        check_parent(db, main, "15", tmp_path)
    db.version = "16"
    with pytest.raises(InvalidArgument, match="cannot be downgraded to PostgreSQL 15: it runs 16"):
        check_parent(db, main, "15", tmp_path)
    db, upgraded = records("18")
    with pytest.raises(FailedPrecondition, match="runs PostgreSQL 18 and database 'shop' runs 15"):
        check_parent(db, upgraded, "", tmp_path)
    with pytest.raises(InvalidArgument, match="'x'"):
        check_parent(*records(), "x", tmp_path)
