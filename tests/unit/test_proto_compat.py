"""The API stays compatible: `buf lint` and `buf breaking` (proto/buf.yaml) in the suite.

Every recent commit that changed proto/ is checked against its parent, and
uncommitted changes against HEAD, with today's rules (WIRE_JSON: what old
clients and daemons see). A commit whose message has "[proto-breaking]" is
a deliberate break (a new API version) and is not checked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import REPO

BUF = REPO / ".tools" / "node_modules" / ".bin" / "buf"
CONFIG = REPO / "proto" / "buf.yaml"
RECENT = 10  # proto-changing commits checked, newest first


def _buf(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: run scripts/setup (it installs @bufbuild/buf)")
    return subprocess.run([str(BUF), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                          cwd=REPO).stdout


def _proto_at(commit: str, dest: Path) -> Path | None:
    """proto/ as it was at `commit`, with today's buf.yaml; None if it had none."""
    if not _git("ls-tree", "-r", "--name-only", commit, "--", "proto").strip():
        return None
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, "proto"], capture_output=True,
                             check=True, cwd=REPO).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    shutil.copy(CONFIG, dest / "proto" / "buf.yaml")
    return dest / "proto"


def _breaking(new: Path, old: Path) -> str:
    run = _buf("breaking", new, "--against", old)
    return "" if run.returncode == 0 else (run.stdout + run.stderr).strip()


def test_buf_lint_is_clean() -> None:
    run = _buf("lint", "proto")
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


def test_proto_changes_are_wire_and_json_compatible(tmp_path: Path) -> None:
    try:
        _git("rev-parse", "--verify", "HEAD~1")
    except subprocess.CalledProcessError:
        pytest.skip("no history to compare with (a shallow clone)")
    pairs: list[tuple[str, Path, Path]] = []
    if _git("status", "--porcelain", "--", "proto").strip():
        head = _proto_at("HEAD", tmp_path / "HEAD")
        if head is not None:
            pairs.append(("uncommitted proto/ vs HEAD", REPO / "proto", head))
    log = _git("log", f"-{RECENT}", "--format=%H %s", "--", "proto/*.proto")
    for line in log.splitlines():
        commit, subject = line.split(" ", 1)
        if "[proto-breaking]" in subject or not _git("rev-list", "--parents", "-1",
                                                    commit).split()[1:]:
            continue
        new = _proto_at(commit, tmp_path / commit)
        old = _proto_at(commit + "~1", tmp_path / (commit + "~1"))
        if new is not None and old is not None:
            pairs.append((f"{commit[:10]} {subject}", new, old))
    failed = [f"{what}:\n{found}" for what, new, old in pairs if (found := _breaking(new, old))]
    assert not failed, "\n\n".join(failed)


def test_a_renumbered_field_is_caught(tmp_path: Path) -> None:
    """The check can fail: moving a field to another number breaks the wire."""
    old = tmp_path / "old"
    shutil.copytree(REPO / "proto", old)
    new = tmp_path / "new"
    shutil.copytree(old, new)
    agent = new / "cygnet" / "v1" / "agent.proto"
    text = agent.read_text()
    line = next(x for x in text.splitlines() if x.strip().startswith("string name = "))
    agent.write_text(text.replace(line, line.split("=")[0] + "= 999;", 1))
    found = _breaking(new, old)
    assert "agent.proto" in found and "was deleted without reserving the number" in found, found
