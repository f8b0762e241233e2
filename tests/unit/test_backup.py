"""Backup round trips on real directory trees."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from cygnet import backup
from cygnet.backup.repo import open_repository
from cygnet.blocks import BLOCK_SIZE, hash_file
from cygnet.blocks.synthetic import change_pages, make_pgdata
from cygnet.errors import InvalidArgument

State = dict[str, tuple[str, int, int, bytes | str]]


def tree_state(root: Path) -> State:
    """Everything restore promises to reproduce: kind, mode, mtime, contents/target."""
    state: State = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", 0, 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, b"")
            else:
                state[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, hash_file(path))
    st = root.stat()
    state["."] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, b"")
    return state


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir(mode=0o700)
    make_pgdata(src, 4 << 20)
    (src / "odd_size").write_bytes(os.urandom(3 * BLOCK_SIZE + 123))
    (src / "empty").write_bytes(b"")
    (src / "zeros").write_bytes(bytes(40 * BLOCK_SIZE))
    (src / "pg_tblspc").mkdir()
    os.symlink("/nonexistent/tablespace", src / "pg_tblspc" / "16999")
    (src / "empty_dir").mkdir(mode=0o750)
    (src / "secret").write_bytes(b"x")
    os.chmod(src / "secret", 0o600)
    (src / os.fsdecode(b"non-utf8-\xff")).write_bytes(b"odd name")
    return src


def test_round_trip(tmp_path: Path, source: Path) -> None:
    repo = tmp_path / "repo"
    info = backup.create_backup(repo, source, {"database": "db1", "pg": 16, "ok": True})
    assert info.logical_bytes == sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    assert info.new_blocks < info.block_count  # the zero pages were stored once
    dest = tmp_path / "dest"
    result = backup.restore(repo, info.backup_id, dest)
    assert result.bytes_written == info.logical_bytes
    assert tree_state(dest) == tree_state(source)
    assert backup.list_backups(repo) == [info]
    meta = backup.get_backup(repo, info.backup_id).metadata
    assert meta == {"database": "db1", "pg": 16, "ok": True}
    assert backup.verify(repo).ok


def test_second_backup_stores_only_changed_blocks(tmp_path: Path, source: Path) -> None:
    repo = tmp_path / "repo"
    relations = [p for p in (source / "base").rglob("*") if p.is_file()]
    original = tree_state(source)
    first = backup.create_backup(repo, source, {"n": 1})
    changed = change_pages(relations, 0.01)
    assert changed > 0
    second = backup.create_backup(repo, source, {"n": 2})
    # Synthetic pages are all distinct, so new blocks are exactly the changed pages.
    assert second.new_blocks == changed
    assert second.new_bytes <= 0.03 * first.new_bytes
    backup.restore(repo, second.backup_id, tmp_path / "second")
    assert tree_state(tmp_path / "second") == tree_state(source)
    backup.restore(repo, first.backup_id, tmp_path / "first")
    assert tree_state(tmp_path / "first") == original
    report = backup.verify(repo)
    assert report.ok and report.manifests_checked == 2 and report.unreferenced_blocks == 0


def test_unchanged_tree_writes_nothing(tmp_path: Path, source: Path) -> None:
    repo = tmp_path / "repo"
    backup.create_backup(repo, source, {})
    again = backup.create_backup(repo, source, {})
    assert (again.new_blocks, again.new_bytes) == (0, 0)


def test_restore_target_must_be_empty(tmp_path: Path, source: Path) -> None:
    repo = tmp_path / "repo"
    info = backup.create_backup(repo, source, {})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(backup.RestoreTargetNotEmpty):
        backup.restore(repo, info.backup_id, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    backup.restore(repo, info.backup_id, tmp_path / "empty")
    assert tree_state(tmp_path / "empty") == tree_state(source)


def test_bad_requests(tmp_path: Path, source: Path) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(backup.RepositoryNotFound):
        backup.list_backups(repo)
    with pytest.raises(InvalidArgument):
        backup.create_backup(repo, tmp_path / "missing", {})
    with pytest.raises(InvalidArgument):
        backup.create_backup(repo, source, {"bad": [1, 2]})  # type: ignore[dict-item]
    backup.init_repository(repo)
    with pytest.raises(backup.BackupNotFound):
        backup.restore(repo, "20240101T000000000000Z-00000000", tmp_path / "d")
    with pytest.raises(InvalidArgument):
        backup.restore(repo, "../../etc", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_lock_excludes_second_writer(tmp_path: Path, source: Path) -> None:
    repo = tmp_path / "repo"
    backup.init_repository(repo)
    with open_repository(repo).writer_lock():
        with pytest.raises(backup.RepositoryLocked):
            backup.create_backup(repo, source, {})
        with pytest.raises(backup.RepositoryLocked):
            backup.prune(repo, keep_last=1)
        assert backup.verify(repo).ok  # readers run beside a writer
    backup.create_backup(repo, source, {})


def test_source_file_replaced_between_backups(tmp_path: Path, source: Path) -> None:
    repo = tmp_path / "repo"
    backup.create_backup(repo, source, {})
    shutil.rmtree(source / "base")
    (source / "odd_size").write_bytes(b"short now")
    info = backup.create_backup(repo, source, {})
    backup.restore(repo, info.backup_id, tmp_path / "d")
    assert tree_state(tmp_path / "d") == tree_state(source)
