"""A moved database's archive (agent/move_archive.py, wal/repo.py): which branches
go along, and a target that stores only well-formed paths, never over a file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cygnet.agent.move_archive import database_branches
from cygnet.wal.repo import Generation, WalRepository

SEGMENT = "000000010000000000000001"


def _gen(branch: str, gen: int, db: str, base: str = "", base_gen: int = 0) -> Generation:
    return Generation(branch, gen, 0, base, base_gen, db, db, branch, time.time())


def test_a_database_takes_its_branches_and_what_they_continue(tmp_path: Path) -> None:
    repo = WalRepository(tmp_path)
    repo.begin(_gen("br_old", 1, "db_old"))  # a deleted database it was restored from
    repo.begin(_gen("br_main", 1, "db_a", "br_old", 1))
    repo.begin(_gen("br_main", 2, "db_a", "br_main", 1))
    repo.begin(_gen("br_dev", 1, "db_a", "br_main", 2))
    repo.begin(_gen("br_other", 1, "db_b"))
    assert database_branches(repo, "db_a") == ["br_dev", "br_main", "br_old"]
    assert database_branches(repo, "db_b") == ["br_other"]
    assert database_branches(repo, "db_none") == []


def test_files_then_adopt_copies_an_archive_exactly(tmp_path: Path) -> None:
    source, target = WalRepository(tmp_path / "a"), WalRepository(tmp_path / "b")
    source.begin(_gen("br_main", 1, "db_a"))
    source.store("br_main", 1, SEGMENT, b"wal" * 1000, 1_700_000_000.5)
    files = source.files("br_main")
    assert [rel for rel, _ in files] == ["br_main/g1/generation.json",
                                         f"br_main/g1/{SEGMENT}.zst"]
    for rel, path in files:
        assert target.adopt(rel, path.read_bytes(), path.stat().st_mtime)
    assert target.generation("br_main", 1) == source.generation("br_main", 1)
    obj = target.objects("br_main", 1)[SEGMENT]
    assert WalRepository.read(obj.path) == b"wal" * 1000
    assert obj.mtime == pytest.approx(1_700_000_000.5, abs=0.01)  # time targets read it
    # A second copy changes nothing, even with other bytes.
    assert not target.adopt(f"br_main/g1/{SEGMENT}.zst", b"other", 1.0)
    assert WalRepository.read(obj.path) == b"wal" * 1000


@given(st.one_of(
    st.sampled_from(["../x/g1/a.zst", "br/g1/../../a.zst", "/etc/g1/a.zst", "br/g1/.a.zst",
                     "br/gx/a.zst", "br/g1/a.txt", "br/g1/sub/a.zst", "br/g1/", "br//a.zst",
                     "br/g1/generation.json/x"]),
    st.text(max_size=40).filter(lambda s: not s.endswith((".zst", "generation.json")))))
def test_adopt_refuses_what_is_not_an_archive_path(rel: str) -> None:
    repo = WalRepository(Path("/nonexistent-cygnet-test"))
    with pytest.raises(ValueError):
        repo.adopt(rel, b"x", 1.0)
