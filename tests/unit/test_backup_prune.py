"""prune removes exactly the blocks no remaining backup references."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cygnet import backup
from cygnet.backup.repo import open_repository
from cygnet.blocks import DedupIndex
from cygnet.blocks.synthetic import change_pages, make_pgdata


def pack_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "packs").glob("*.pack"))


def three_generations(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    src, repo = tmp_path / "src", tmp_path / "repo"
    files = make_pgdata(src, 2 << 20, seed=7)
    ids = []
    for gen in range(3):
        if gen:
            change_pages(files, 0.2, seed=gen)
        ids.append(backup.create_backup(repo, src, {"gen": gen}, pack_size=128 << 10).backup_id)
    return src, repo, ids


def test_keep_last_removes_only_unreferenced(tmp_path: Path) -> None:
    src, repo, ids = three_generations(tmp_path)
    before = pack_bytes(repo)
    report = backup.prune(repo, keep_last=1, pack_size=128 << 10)
    assert report.deleted_backups == ids[:2]
    assert report.blocks_removed > 0 and report.bytes_freed > 0
    assert pack_bytes(repo) == before - report.bytes_freed
    check = backup.verify(repo)
    assert check.ok and check.unreferenced_blocks == 0
    # Every stored block is one the last backup needs.
    info = backup.get_backup(repo, ids[2])
    assert check.blocks_checked <= info.block_count
    backup.restore(repo, ids[2], tmp_path / "d")
    assert all(
        (tmp_path / "d" / p.relative_to(src)).read_bytes() == p.read_bytes()
        for p in src.rglob("*")
        if p.is_file()
    )


def test_delete_middle_keeps_neighbours(tmp_path: Path) -> None:
    _, repo, ids = three_generations(tmp_path)
    backup.prune(repo, delete=[ids[1]])
    assert [b.backup_id for b in backup.list_backups(repo)] == [ids[0], ids[2]]
    assert backup.verify(repo).ok
    for backup_id in (ids[0], ids[2]):
        backup.restore(repo, backup_id, tmp_path / backup_id)


def test_unknown_id_deletes_nothing(tmp_path: Path) -> None:
    _, repo, ids = three_generations(tmp_path)
    with pytest.raises(backup.BackupNotFound):
        backup.prune(repo, delete=[ids[0], "20000101T000000000000Z-00000000"])
    assert len(backup.list_backups(repo)) == 3


def test_prune_everything_then_back_up_again(tmp_path: Path) -> None:
    src, repo, _ = three_generations(tmp_path)
    backup.prune(repo, keep_last=0)
    assert list((repo / "packs").iterdir()) == []
    info = backup.create_backup(repo, src, {})
    assert info.new_blocks > 0
    assert backup.verify(repo).ok


def test_duplicate_blocks_from_interrupted_prune_are_dropped(tmp_path: Path) -> None:
    """An interrupted prune may leave a block in an old and a new pack: both
    are valid, the next prune keeps exactly one."""
    _, repo, ids = three_generations(tmp_path)
    repository = open_repository(repo)
    pack_id = repository.pack_ids()[0]
    copy_id = pack_id ^ 1
    shutil.copy(repository.pack_path(pack_id), repository.pack_path(copy_id))
    records = bytearray(repository.idx_path(pack_id).read_bytes())
    from cygnet.backup.packs import decode_idx, encode_idx

    recs = DedupIndex.from_bytes(decode_idx(bytes(records), "idx")).to_bytes()
    patched = bytearray(recs)
    for off in range(0, len(patched), 40):
        patched[off + 16 : off + 24] = copy_id.to_bytes(8, "little")
    repository.idx_path(copy_id).write_bytes(b"".join(encode_idx(bytes(patched))))
    assert backup.verify(repo).ok
    before = pack_bytes(repo)
    backup.prune(repo)
    assert pack_bytes(repo) < before
    report = backup.verify(repo)
    assert report.ok and report.unreferenced_blocks == 0
    for backup_id in ids:
        backup.restore(repo, backup_id, tmp_path / backup_id)
