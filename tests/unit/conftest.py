"""Fixtures shared by unit tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cygnet.endpoint.relay_link import relay_pid


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Path]:
    """The control socket path of an endpoint relay process, stopped after the test."""
    path = tmp_path / "relay.sock"
    yield path
    pid = relay_pid(path)
    if pid is not None:
        subprocess.run(["kill", str(pid)], check=False)
