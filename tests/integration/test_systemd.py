"""cygnetd speaks sd_notify to a real NOTIFY_SOCKET that the test opens itself.

PID 1 here is not systemd, so the test plays the service manager's part: a
unix datagram socket with SO_PASSCRED, as systemd binds it, and the
environment systemd gives a Type=notify service with WatchdogSec=2.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cygnet import systemd
from tests.harness import REPO, WORK, Daemon, FilePool

pytestmark = pytest.mark.integration

UNITS = REPO / "deploy" / "systemd"


@dataclass
class Message:
    pid: int
    fields: dict[str, str]
    at: float


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[Message] = []

    def receive(self, timeout: float) -> Message | None:
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        msg = Message(pid, fields, time.monotonic())
        self.messages.append(msg)
        return msg

    def wait_for(self, key: str, timeout: float) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.receive(max(0.01, deadline - time.monotonic()))
            if msg is not None and key in msg.fields:
                return msg
        raise AssertionError(f"no {key} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Daemon, NotifySocket]]:
    base = WORK / ("sd" + secrets.token_hex(3))
    base.mkdir(parents=True)
    notify = NotifySocket(base / "notify.sock")
    # What systemd puts in a Type=notify service's environment (WatchdogSec=2).
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    pool = FilePool.create("1G")
    daemon = Daemon(pool, base, port_min=60000)
    try:
        yield daemon, notify
    finally:
        daemon.stop()
        notify.close()
        pool.destroy(daemon.mount_root)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _serving(daemon: Daemon) -> bool:
    with daemon.channel() as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def test_ready_status_watchdog_and_stopping(notified: tuple[Daemon, NotifySocket]) -> None:
    daemon, notify = notified
    daemon.start()  # returns once health says SERVING
    ready = notify.wait_for("READY", 30)
    assert daemon.proc is not None
    assert ready.pid == daemon.proc.pid and ready.fields["MAINPID"] == str(daemon.proc.pid)
    assert ready.fields["STATUS"].startswith("serving on ")
    before = [m.fields.get("STATUS", "") for m in notify.messages[:-1]]
    assert any(s.startswith("reconciling") for s in before), before
    assert _serving(daemon)

    # WatchdogSec=2 -> a ping every second, from the daemon itself.
    first = notify.wait_for("WATCHDOG", 5)
    second = notify.wait_for("WATCHDOG", 5)
    assert first.pid == second.pid == daemon.proc.pid
    assert 0.5 < second.at - first.at < 2.0

    daemon.proc.send_signal(signal.SIGTERM)
    assert notify.wait_for("STOPPING", 10).fields["STATUS"].startswith("stopping")
    assert daemon.proc.wait(20) == 0


def test_ready_comes_after_serving(notified: tuple[Daemon, NotifySocket]) -> None:
    """READY=1 is sent only once requests are answered: check health the moment it comes."""
    daemon, notify = notified
    daemon.base.mkdir(parents=True, exist_ok=True)
    daemon.proc = subprocess.Popen(daemon.argv(), stdout=open(daemon.log_path, "ab"),  # noqa: SIM115
                                   stderr=subprocess.STDOUT, start_new_session=True)
    notify.wait_for("READY", 60)
    assert _serving(daemon), daemon.tail()


def test_no_notify_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.ready("x") is False
    assert systemd.watchdog_interval() is None


def test_watchdog_meant_for_another_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert systemd.watchdog_interval() is None


def test_journal_only_when_stderr_is_the_journal_stream(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """systemd sets JOURNAL_STREAM=DEV:INODE of the stream it gave us as stderr."""
    import sys

    with open(tmp_path / "stderr", "w") as f:
        monkeypatch.setattr(sys, "stderr", f)
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert systemd.journal_stream()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not systemd.journal_stream()  # inherited by a child with other stderr


@pytest.mark.parametrize("unit", sorted(p.name for p in UNITS.glob("*.service")))
def test_unit_files_verify(unit: str, tmp_path: Path) -> None:
    """systemd-analyze checks the unit's syntax and every directive it knows."""
    text = (UNITS / unit).read_text()
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "KillMode=process",
                "NotifyAccess=main"):
        assert key in text, key
    # ExecStart must name an existing binary for verify to pass: point it at ours.
    venv = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv"))
    text = text.replace("/opt/cygnet/venv", str(venv))
    (tmp_path / unit).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / unit)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines()
                if str(tmp_path) in line and "not executable" not in line]
    assert not problems, result.stderr
