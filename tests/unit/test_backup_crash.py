"""kill -9 at any moment of a backup or prune leaves a repository that verifies.

The writer runs in a child process that is SIGKILLed; nothing is mocked.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cygnet import backup
from cygnet.blocks import hash_file
from cygnet.blocks.synthetic import change_pages, make_pgdata

PACK = 64 << 10  # small packs: many commits, so kills land between and inside them
CHILD = {
    "backup": "create_backup(sys.argv[1], sys.argv[2], {{}}, pack_size={pack})",
    "prune": "prune(sys.argv[1], keep_last=1, pack_size={pack})",
}


def spawn(op: str, repo: Path, src: Path) -> subprocess.Popen[bytes]:
    code = "import sys\nfrom cygnet.backup import *\n" + CHILD[op].format(pack=PACK)
    return subprocess.Popen([sys.executable, "-c", code, str(repo), str(src)])


def kill(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def assert_restores(repo: Path, backup_id: str, src: Path, dest: Path) -> None:
    backup.restore(repo, backup_id, dest)
    for path in src.rglob("*"):
        if path.is_file():
            assert hash_file(dest / path.relative_to(src)) == hash_file(path), path


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, list[Path]]:
    src = tmp_path / "src"
    return src, make_pgdata(src, 12 << 20, seed=11)


def test_backup_killed_after_some_packs(tmp_path: Path, source: tuple[Path, list[Path]]) -> None:
    src, _ = source
    repo = tmp_path / "repo"
    proc = spawn("backup", repo, src)
    deadline = time.monotonic() + 30
    while len(list((repo / "packs").glob("*.idx"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert kill(proc) == -signal.SIGKILL, "backup finished before it could be killed"
    report = backup.verify(repo)
    assert report.ok, report.issues
    assert report.packs_checked >= 3 and report.manifests_checked == 0
    assert report.unreferenced_blocks == report.blocks_checked
    # The next backup cleans the garbage and reuses the committed blocks.
    info = backup.create_backup(repo, src, {})
    assert info.new_blocks < info.block_count
    report = backup.verify(repo)
    assert report.ok and report.garbage == [] and report.unreferenced_blocks == 0
    assert_restores(repo, info.backup_id, src, tmp_path / "dest")


@pytest.mark.parametrize("op", ["backup", "prune"])
def test_killed_at_random_moments(tmp_path: Path, source: tuple[Path, list[Path]], op: str) -> None:
    src, files = source
    template = tmp_path / "template"
    first = backup.create_backup(template, src, {}, pack_size=PACK)
    change_pages(files, 0.3)
    second = backup.create_backup(template, src, {}, pack_size=PACK)
    at_second = tmp_path / "at_second"
    shutil.copytree(src, at_second)
    # Time one uninterrupted child run (interpreter start-up included).
    shutil.copytree(template, tmp_path / "timed")
    started = time.monotonic()
    assert spawn(op, tmp_path / "timed", at_second).wait() == 0
    full_run = time.monotonic() - started
    outcomes = []
    for i, fraction in enumerate([0.1, 0.3, 0.5, 0.7, 0.85, 0.95]):
        repo = tmp_path / f"repo{i}"
        shutil.copytree(template, repo)
        if op == "backup":
            change_pages(files, 0.05, seed=100 + i)
        proc = spawn(op, repo, src)
        time.sleep(full_run * fraction)
        outcomes.append(kill(proc))
        report = backup.verify(repo)
        assert report.ok, (op, fraction, report.issues)
        remaining = [b.backup_id for b in backup.list_backups(repo)]
        assert remaining[:2] == [first.backup_id, second.backup_id][-len(remaining[:2]) :]
        if op == "prune":
            assert second.backup_id in remaining and len(remaining) <= 2
            assert_restores(repo, second.backup_id, at_second, tmp_path / f"dest{i}")
        elif len(remaining) == 3:  # the backup completed before the kill
            assert_restores(repo, remaining[2], src, tmp_path / f"dest{i}")
        else:
            assert_restores(repo, second.backup_id, at_second, tmp_path / f"dest{i}")
        shutil.rmtree(tmp_path / f"dest{i}")
    # Most kills must land mid-operation for the test to mean anything.
    assert outcomes.count(-signal.SIGKILL) >= 3, outcomes
