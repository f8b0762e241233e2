"""Parsing postmaster.pid and /proc/PID/stat."""

from __future__ import annotations

import os

from cygnet.postgres.pidfile import PidFile, parse_pidfile
from cygnet.postgres.procfs import postmaster_by_pid, read_stat

READY = (
    "4242\n/srv/db/pgdata\n1700000000\n56001\n/run/cygnet/s/abc\n127.0.0.1\n"
    "  56001001     32768\nready   \n"
)


def test_parse_ready_pidfile() -> None:
    assert parse_pidfile(READY) == PidFile(
        pid=4242,
        data_dir="/srv/db/pgdata",
        start_epoch=1700000000,
        port=56001,
        socket_dir="/run/cygnet/s/abc",
        listen_address="127.0.0.1",
        status="ready",
    )


def test_parse_partial_pidfile_while_starting() -> None:
    pf = parse_pidfile("4242\n/srv/db/pgdata\n1700000000\n56001\n")
    assert pf is not None and pf.pid == 4242 and pf.status == "" and pf.socket_dir == ""


def test_parse_statuses() -> None:
    for status in ("starting", "stopping", "standby"):
        pf = parse_pidfile(READY.replace("ready   ", status.ljust(8)))
        assert pf is not None and pf.status == status


def test_parse_garbage() -> None:
    for text in ("", "\n", "abc\n/x\n", "-1\n/x\n", "4242"):
        assert parse_pidfile(text) is None


def test_read_stat_of_self() -> None:
    stat = read_stat(os.getpid())
    assert stat is not None
    assert stat.ppid == os.getppid()
    assert stat.state in ("R", "S")
    assert stat.start_ticks > 0


def test_read_stat_missing_pid() -> None:
    assert read_stat(2**22 + 1) is None


def test_self_is_not_a_postmaster() -> None:
    assert postmaster_by_pid(os.getpid(), __import__("pathlib").Path(os.getcwd())) is None
