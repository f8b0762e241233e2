"""Shared fixtures: a file-backed pool and a running cygnetd for the whole session."""

from __future__ import annotations

import contextlib
import secrets
from collections import Counter
from collections.abc import Iterator

import pytest

from cygnet.agent.reserved_ports import PROC_NET
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.harness import WORK, Daemon, private_daemon
from tests.leftovers import clean_if_alone


@pytest.fixture(scope="session", autouse=True)
def no_leftovers_of_killed_runs() -> None:
    removed = Counter(item.split()[0] for item in clean_if_alone(WORK))
    if removed:
        kinds = ", ".join(f"{n} {kind}(s)" for kind, n in sorted(removed.items()))
        print(f"\nremoved what killed runs left in {WORK}: {kinds}")


RESERVED_PORTS = PROC_NET / "ip_local_reserved_ports"


@pytest.fixture(scope="session", autouse=True)
def reserved_ports_put_back() -> Iterator[None]:
    """Each test daemon reserves its port range on this machine at start
    (agent/reserved_ports.py); the machine gets its own setting back at the end."""
    before = RESERVED_PORTS.read_text()
    yield
    with contextlib.suppress(OSError):
        RESERVED_PORTS.write_text(before)


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    with private_daemon("d", 55000, "6G") as d:
        yield d


@pytest.fixture
def stub(daemon: Daemon) -> Iterator[pb_grpc.AgentStub]:
    with daemon.stub() as s:
        yield s


def unique(prefix: str = "db") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
