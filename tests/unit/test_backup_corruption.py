"""Damage on disk is found by verify and refused by restore."""

from __future__ import annotations

from pathlib import Path

import pytest

from cygnet import backup
from cygnet.backup.packs import PACK_MAGIC
from cygnet.backup.repo import open_repository
from cygnet.blocks.synthetic import make_pgdata


@pytest.fixture
def repo_with_backup(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src"
    make_pgdata(src, 2 << 20, seed=3)
    repo = tmp_path / "repo"
    info = backup.create_backup(repo, src, {"db": "x"}, pack_size=256 << 10)
    return repo, info.backup_id


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(data)


def test_corrupt_pack_byte(tmp_path: Path, repo_with_backup: tuple[Path, str]) -> None:
    repo, backup_id = repo_with_backup
    pack = sorted((repo / "packs").glob("*.pack"))[1]
    flip_byte(pack, len(PACK_MAGIC) + 5000)
    report = backup.verify(repo)
    assert not report.ok
    kinds = {(i.kind, i.path) for i in report.issues}
    assert ("pack", pack.name) in kinds
    assert ("missing-block", f"{backup_id}.manifest") in kinds
    dest = tmp_path / "dest"
    with pytest.raises(backup.CorruptRepository):
        backup.restore(repo, backup_id, dest)
    assert not dest.exists()  # nothing half-restored is left


def test_corrupt_manifest(tmp_path: Path, repo_with_backup: tuple[Path, str]) -> None:
    repo, backup_id = repo_with_backup
    manifest = repo / "backups" / f"{backup_id}.manifest"
    flip_byte(manifest, manifest.stat().st_size - 100)  # inside the digest blob
    report = backup.verify(repo)
    assert [i.kind for i in report.issues] == ["manifest"]
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(backup.CorruptRepository):
        backup.restore(repo, backup_id, dest)
    assert list(dest.iterdir()) == []


def test_corrupt_index_is_reported_and_healed(
    tmp_path: Path, repo_with_backup: tuple[Path, str]
) -> None:
    repo, backup_id = repo_with_backup
    idx = sorted((repo / "packs").glob("*.idx"))[0]
    flip_byte(idx, 30)
    report = backup.verify(repo)
    assert {i.kind for i in report.issues} == {"index", "missing-block"}
    with pytest.raises(backup.CorruptRepository):
        backup.restore(repo, backup_id, tmp_path / "d1")
    # A new backup of the same data stores the blocks the bad index hid.
    info = backup.create_backup(repo, tmp_path / "src", {})
    assert info.new_blocks > 0
    backup.restore(repo, info.backup_id, tmp_path / "d2")


def test_truncated_pack(repo_with_backup: tuple[Path, str]) -> None:
    repo, _ = repo_with_backup
    pack = sorted((repo / "packs").glob("*.pack"))[0]
    data = pack.read_bytes()
    pack.write_bytes(data[: len(data) // 2])
    report = backup.verify(repo)
    assert any(i.kind == "pack" and "past the end" in i.detail for i in report.issues)


def test_garbage_is_tolerated_and_cleaned(repo_with_backup: tuple[Path, str]) -> None:
    repo, _ = repo_with_backup
    (repo / "packs" / "00000000deadbeef.pack").write_bytes(PACK_MAGIC + b"partial")
    (repo / "tmp" / "x.manifest.1234.tmp").write_bytes(b"partial")
    report = backup.verify(repo)
    assert report.ok and len(report.garbage) == 2
    backup.prune(repo)  # garbage collection only
    assert open_repository(repo).garbage() == []
