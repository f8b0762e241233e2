"""`cygnet` on a terminal (a real pty): progress with elapsed time; help and completion."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from tests.conftest import unique
from tests.harness import Daemon
from tests.integration.test_cli_support import ANSI, CYGNET, cli_env, cygnet

pytestmark = pytest.mark.integration


def run_in_pty(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    """Runs argv with stdin, stdout and stderr on a fresh 120x40 pty; returns all it printed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = cli_env(TERM="xterm-256color", COLUMNS="120", LINES="40")
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_progress_with_elapsed_time_on_a_terminal(daemon: Daemon) -> None:
    name = unique("clit")
    base = [CYGNET, "--socket", str(daemon.socket)]
    code, out = run_in_pty([*base, "db", "create", name])
    assert code == 0, out
    assert f"Creating database {name}…" in out  # the live spinner line
    assert re.search(r"Creating database .*?\d+\.\ds", out)  # with elapsed seconds
    assert re.search(rf"Created database {name} in \d+\.\ds", out)
    assert ANSI.search(out)  # a terminal gets styles
    assert "postgresql://" in out
    code, out = run_in_pty([*base, "branch", "create", f"{name}/b1"])
    assert code == 0 and re.search(rf"Created branch {name}/b1 in \d+\.\ds", out), out
    code, out = run_in_pty([*base, "db", "rm", name, "--yes"])
    assert code == 0 and re.search(rf"Deleted database {name} in \d+\.\ds", out), out


def test_errors_on_a_terminal_are_one_line() -> None:
    code, out = run_in_pty([CYGNET, "--socket", "/nonexistent/cygnetd.sock", "db", "list"])
    assert code == 5
    assert out.strip().splitlines() == [
        "cygnet: error: cannot reach cygnetd at unix:/nonexistent/cygnetd.sock: no such socket "
        "(is cygnetd running? see --socket or --host)"]


COMMANDS = [
    [], ["db"], ["db", "create"], ["db", "list"], ["db", "show"], ["db", "rm"],
    ["branch"], ["branch", "create"], ["branch", "list"], ["branch", "tree"],
    ["branch", "show"], ["branch", "reset"], ["branch", "start"], ["branch", "stop"],
    ["branch", "rm"], ["snapshot"], ["snapshot", "create"], ["snapshot", "list"],
    ["snapshot", "rm"], ["connect"], ["host"], ["host", "status"], ["version"],
    ["completion"], ["status"], ["context"], ["context", "list"],
]
WITH_EXAMPLES = {("db", "create"), ("db", "list"), ("db", "rm"), ("branch", "create"),
                 ("branch", "reset"), ("branch", "rm"), ("branch", "tree"),
                 ("snapshot", "create"), ("connect",), ("completion",), ("status",),
                 ("context",), ()}


def test_help_of_every_command() -> None:
    for args in COMMANDS:
        out = cygnet(None, *args, "--help").out
        assert out.startswith("Usage: cygnet"), args
        # A description, not only the usage line.
        assert len([ln for ln in out.splitlines() if ln.strip()]) >= 4, args
        if tuple(args) in WITH_EXAMPLES:
            assert "Example" in out or "Quick tour" in out or "Setup" in out, args
    top = cygnet(None, "--help").out
    for noun in ("db", "branch", "snapshot", "connect", "host", "version", "completion",
                 "status", "context"):
        assert f"  {noun} " in top
    assert "Exit codes" in top


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(shell: str) -> None:
    script = cygnet(None, "completion", shell).out
    assert "_CYGNET_COMPLETE" in script
    if shell == "bash":  # zsh is not installed here; bash at least parses its script
        subprocess.run(["bash", "-n"], input=script, text=True, check=True, timeout=30)


def test_completion_completes_commands() -> None:
    env = cli_env(_CYGNET_COMPLETE="bash_complete", COMP_WORDS="cygnet bra", COMP_CWORD="1")
    result = subprocess.run([CYGNET], capture_output=True, text=True, env=env, timeout=30)
    assert "plain,branch" in result.stdout
