"""spawn_detached: the C double fork that starts every postmaster."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

import pytest

from cygnet._native import spawn_detached


def _wait_for(path: Path, text: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        content = path.read_text()
        if text in content:
            return content
        time.sleep(0.01)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_runs_as_the_user_in_its_own_session_with_pid_1_as_parent(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    log = tmp_path / "out.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        pid = spawn_detached(["/bin/sh", "-c", "echo uid=$(id -u) sid=$(ps -o sid= -p $$); "
                              "sleep 2"], ["PATH=/usr/bin:/bin"], nobody.pw_uid,
                             nobody.pw_gid, fd, "/")
    finally:
        os.close(fd)
    content = _wait_for(log, "sid=")
    assert f"uid={nobody.pw_uid}" in content
    assert int(content.split("sid=")[1]) == pid  # leader of its own session
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()
    os.kill(pid, 9)


def test_bad_arguments_are_errors_not_crashes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="argv must not be empty"):
        spawn_detached([], [], 0, 0, 1, "/")
    with pytest.raises(TypeError, match=r"argv\[1\]"):
        spawn_detached(["/bin/true", 5], [], 0, 0, 1, "/")  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"env\[0\]"):
        spawn_detached(["/bin/true"], ["A=\x00"], 0, 0, 1, "/")
