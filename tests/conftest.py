"""Shared fixtures: a file-backed pool and a running cygnetd for the whole session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.harness import WORK, Daemon, FilePool


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    pool = FilePool.create("6G")
    d = Daemon(pool, WORK / ("d" + secrets.token_hex(3)), port_min=55000)
    try:
        d.start()
        yield d
    finally:
        d.stop()
        pool.destroy(d.mount_root)


@pytest.fixture
def stub(daemon: Daemon) -> Iterator[object]:
    with daemon.stub() as s:
        yield s


def unique(prefix: str = "db") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
