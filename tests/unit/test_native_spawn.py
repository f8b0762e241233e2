"""spawn_detached: the C double fork that starts every postmaster."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cygnet._native import spawn_detached


def _wait_for(path: Path, text: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
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
    with pytest.raises(ValueError, match=r"pass_fds\[0\]"):
        spawn_detached(["/bin/true"], [], 0, 0, 1, "/", pass_fds=[2])
    with pytest.raises(ValueError, match="log_fd"):
        spawn_detached(["/bin/true"], [], 0, 0, -1, "/")


def test_exec_failures_reach_the_caller_naming_the_program(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="exec") as missing:
        spawn_detached([str(tmp_path / "nope")], [], 0, 0, 1, "/")
    assert missing.value.filename == str(tmp_path / "nope")
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError, match="exec") as denied:
        spawn_detached([str(script)], [], 65534, 65534, 1, "/")
    assert denied.value.filename == str(script)
    with pytest.raises(FileNotFoundError, match="chdir to /nonexistent"):
        spawn_detached(["/bin/true"], [], 0, 0, 1, "/nonexistent")


def _fds_of(pid: int) -> set[int]:
    return {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}


def test_only_stdio_and_pass_fds_are_inherited(tmp_path: Path) -> None:
    stray = os.open("/dev/null", os.O_RDONLY)  # inheritable, as a careless caller leaves it
    os.set_inheritable(stray, True)
    kept = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)  # pass_fds overrides CLOEXEC
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        pid = spawn_detached(["/bin/sleep", "30"], [], 0, 0, log, "/", pass_fds=[kept])
        try:
            # The call returns once the child has exec'd; its dynamic loader may
            # still hold a library open for a moment (seen once: fd 3). An
            # inherited descriptor would stay for the child's whole life.
            deadline = time.monotonic() + 5
            while _fds_of(pid) != {0, 1, 2, kept} and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _fds_of(pid) == {0, 1, 2, kept}
        finally:
            os.kill(pid, 9)
    finally:
        for fd in (stray, kept, log):
            os.close(fd)


# A fresh interpreter without GRPC_ENABLE_FORK_SUPPORT: gRPC's fork handlers
# are live, a grpc.aio server answers calls, and postmaster-like starts run
# from a worker thread meanwhile (as cygnetd's do), then commands as another
# user through the runner. A fork() would run the handlers, which crash the
# child before it execs.
_GRPC_SCRIPT = """
import asyncio, os, sys
import grpc
from cygnet import command
from cygnet._native import spawn_detached

out = sys.argv[1]

async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "t.T", {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    echo = channel.unary_unary("/t.T/Echo")
    done = False
    async def pound():
        while not done:
            assert await echo(b"x") == b"x"
    callers = [asyncio.create_task(pound()) for _ in range(4)]
    def spawn_all():
        pids = []
        for i in range(40):
            fd = os.open(f"{out}/log{i}", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                pids.append(spawn_detached(["/bin/sh", "-c", f"echo started > {out}/ran{i}"],
                                           [], 0, 0, fd, "/"))
            finally:
                os.close(fd)
        return pids
    pids = await asyncio.to_thread(spawn_all)
    nobody = command.RunAs(65534, 65534, {"PATH": "/usr/bin:/bin"})
    for _ in range(10):  # the command runner's user switch, also without fork()
        result = await command.run(["/usr/bin/id", "-u"], timeout=30, run_as=nobody)
        assert result.stdout.strip() == "65534", result
    done = True
    await asyncio.gather(*callers)
    await channel.close()
    await server.stop(None)
    print(len(pids), "spawned")

asyncio.run(main())
"""


def test_spawns_while_a_grpc_aio_server_runs_with_fork_support_on(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    result = subprocess.run([sys.executable, "-c", _GRPC_SCRIPT, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "40 spawned" in result.stdout
    assert "fork" not in result.stderr  # gRPC logs when its fork handlers run
    for i in range(40):
        _wait_for(tmp_path / f"ran{i}", "started")
