"""Shared fixtures: a file-backed pool and a running cygnetd for the whole session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.harness import Daemon, private_daemon


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    with private_daemon("d", 55000, "6G") as d:
        yield d


@pytest.fixture
def stub(daemon: Daemon) -> Iterator[object]:
    with daemon.stub() as s:
        yield s


def unique(prefix: str = "db") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
