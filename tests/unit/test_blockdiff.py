"""Per-relation page diffs of data-directory trees, and of backups."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from cygnet import backup
from cygnet.blocks import BLOCK_SIZE
from cygnet.blocks.pgdiff import PG_DEFAULT, PG_GLOBAL, RelFileKey, classify, diff_data_dirs
from cygnet.blocks.synthetic import page, pages

RNG = random.Random(5)


def write_pages(path: Path, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pages(RNG, count))


def rewrite_pages(path: Path, indexes: list[int]) -> None:
    with open(path, "r+b") as f:
        for i in indexes:
            f.seek(i * BLOCK_SIZE)
            f.write(page(RNG))


def make_tree(root: Path, tablespace: Path) -> None:
    write_pages(root / "base/5/16384", 30)
    write_pages(root / "base/5/16384.1", 10)  # second segment of the same relation
    write_pages(root / "base/5/16384_fsm", 3)
    write_pages(root / "base/5/16384_vm", 1)
    write_pages(root / "base/5/16390", 4)
    write_pages(root / "base/6/16384", 4)  # same relfilenode, other database
    write_pages(root / "global/1262", 2)
    (root / "base/5/pg_filenode.map").write_bytes(b"map")
    write_pages(root / "pg_xact/0000", 2)
    write_pages(tablespace / "PG_16_202307071/5/17000", 5)
    (root / "pg_tblspc").mkdir()
    os.symlink(tablespace, root / "pg_tblspc/17001")


def test_classify() -> None:
    assert classify("base/5/16384.3") == (RelFileKey(5, 16384), PG_DEFAULT, "main")
    assert classify("base/5/16384_vm") == (RelFileKey(5, 16384), PG_DEFAULT, "vm")
    assert classify("base/5/16384_init.2") == (RelFileKey(5, 16384), PG_DEFAULT, "init")
    assert classify("global/1262") == (RelFileKey(0, 1262), PG_GLOBAL, "main")
    assert classify("pg_tblspc/17001/PG_16_1/5/17000") == (RelFileKey(5, 17000), 17001, "main")
    for other in (
        "base/5/pg_filenode.map",
        "base/5/t3_16384",
        "pg_wal/000000010000000000000001",
        "base/pgsql_tmp/x",
        "PG_VERSION",
        "base/5/16384_xyz",
    ):
        assert classify(other) is None, other


def test_diff_data_dirs(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    make_tree(old, tmp_path / "ts_old")
    shutil.copytree(old, new, symlinks=True)
    shutil.copytree(tmp_path / "ts_old", tmp_path / "ts_new")
    os.unlink(new / "pg_tblspc/17001")
    os.symlink(tmp_path / "ts_new", new / "pg_tblspc/17001")
    assert diff_data_dirs(old, new).relations == {}

    rewrite_pages(new / "base/5/16384", [0, 7, 29])
    rewrite_pages(new / "base/5/16384.1", [2])
    write_pages(new / "base/5/16384.2", 2)  # the relation grew a segment
    rewrite_pages(new / "base/5/16384_vm", [0])
    os.unlink(new / "base/5/16390")  # dropped
    write_pages(new / "base/5/16400", 3)  # created
    rewrite_pages(new / "global/1262", [1])
    rewrite_pages(tmp_path / "ts_new/PG_16_202307071/5/17000", [4])
    rewrite_pages(new / "pg_xact/0000", [0])

    diff = diff_data_dirs(old, new, workers=2)
    rel = diff.relations
    assert set(rel) == {(5, 16384), (5, 16390), (5, 16400), (0, 1262), (5, 17000)}
    main = rel[RelFileKey(5, 16384)]
    assert (main.main_changed_pages, main.main_pages_before, main.main_pages_after) == (6, 40, 42)
    assert (main.vm_changed_pages, main.fsm_changed_pages, main.status) == (1, 0, "modified")
    assert (rel[RelFileKey(5, 16390)].status, rel[RelFileKey(5, 16390)].main_changed_pages) == (
        "removed",
        4,
    )
    assert rel[RelFileKey(5, 16400)].status == "added"
    assert rel[RelFileKey(0, 1262)].tablespace_oid == PG_GLOBAL
    assert rel[RelFileKey(5, 17000)].tablespace_oid == 17001
    assert diff.other_files == {"pg_xact/0000": 1}
    assert diff.main_changed_pages == 6 + 4 + 3 + 1 + 1


def test_diff_backups_matches_tree_diff(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, tmp_path / "ts")
    os.unlink(src / "pg_tblspc/17001")  # backups do not follow tablespace links
    repo = tmp_path / "repo"
    before = backup.create_backup(repo, src, {})
    shutil.copytree(src, tmp_path / "old")
    rewrite_pages(src / "base/5/16384.1", [0, 9])
    after = backup.create_backup(repo, src, {})
    diff = backup.diff_backups(repo, before.backup_id, after.backup_id)
    assert diff == diff_data_dirs(tmp_path / "old", src)
    assert {k: v.main_changed_pages for k, v in diff.relations.items()} == {(5, 16384): 2}
