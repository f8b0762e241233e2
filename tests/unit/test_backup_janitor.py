"""Deleted databases' backups expire from their deletion on (agent/backup_janitor.py),
in a real repository: the pruned backups are gone with their blocks, the others
verify and restore."""

from __future__ import annotations

import os
from pathlib import Path

from cygnet import backup
from cygnet.agent import backup_janitor

DAY = 86400.0


def _source(root: Path, seed: int) -> Path:
    src = root / f"src{seed}"
    (src / "base").mkdir(parents=True)
    (src / "base" / "shared").write_bytes(b"\0" * 65536)  # a block every backup shares
    (src / "base" / "own").write_bytes(os.urandom(65536))
    return src


def test_backups_expire_a_retention_after_their_database_was_deleted(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    made = {db: [backup.create_backup(repo, _source(tmp_path, seed), {"database_id": db}
                                      ).backup_id for seed in seeds]
            for db, seeds in (("db-gone", (1, 2)), ("db-live", (0,)))}
    by_hand = backup.create_backup(repo, _source(tmp_path, 9), {"note": "no database"})
    backup_janitor.mark_deleted(repo, "db-gone", 1000.0)
    backup_janitor.mark_deleted(repo, "db-gone", 5000.0)  # a retried deletion keeps the first
    assert backup_janitor.expire(repo, 7 * DAY, 1000.0 + 7 * DAY - 1) == []
    assert len(backup.list_backups(repo)) == 4
    pruned = backup_janitor.expire(repo, 7 * DAY, 1000.0 + 7 * DAY)
    assert sorted(pruned) == sorted(made["db-gone"])
    left = {b.backup_id for b in backup.list_backups(repo)}
    assert left == {*made["db-live"], by_hand.backup_id}
    assert backup.verify(repo).ok
    backup.restore(repo, made["db-live"][0], tmp_path / "restored")
    assert (tmp_path / "restored" / "base" / "own").read_bytes() == \
        (tmp_path / "src0" / "base" / "own").read_bytes()
    # The deletion is forgotten once its backups are gone.
    assert backup_janitor.expire(repo, 7 * DAY, 1000.0 + 30 * DAY) == []
    assert "db-gone" not in (repo / backup_janitor.TOMBSTONES).read_text()


def test_a_deletion_before_any_backup_and_a_missing_repository(tmp_path: Path) -> None:
    repo = tmp_path / "none-yet"
    assert backup_janitor.expire(repo, DAY, 0.0) == []
    backup_janitor.mark_deleted(repo, "db", 0.0)
    assert backup_janitor.expire(repo, DAY, 2 * DAY) == []
    assert "db" not in (repo / backup_janitor.TOMBSTONES).read_text()
