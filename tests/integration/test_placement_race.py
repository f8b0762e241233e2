"""Two cygnet-coordinator processes place on one store at once: no host is overcommitted.

The leader places from its in-memory index, the other through the store's
placement transaction; both write conditional per-host reservations, so a
host's room is decided by the store whatever either process believes.
"""

from __future__ import annotations

import contextlib
import secrets
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from cygnet.api.v1 import coordinator_pb2 as cpb
from tests.e2e.fleet import Coordinator
from tests.integration import coordinator_helpers, pg_helpers
from tests.integration.coordinator_helpers import (
    PgServer,
    coordinators,
    reservations,
    simulated_hosts,
    wait_leader,
)

pytestmark = pytest.mark.integration
pg_template = pg_helpers.pg_template
pg_server = coordinator_helpers.pg_server

HOSTS, SLOTS, ASKED = 6, 5, 80


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/coordinator.db"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.new_database()


@pytest.fixture
def two(store_url: str, tmp_path: Path) -> Iterator[list[Coordinator]]:
    simulated_hosts(store_url, HOSTS, max_clusters=SLOTS)
    procs = coordinators(tmp_path, store_url, 2)
    try:
        wait_leader(store_url, 15)
        yield procs
    finally:
        for c in procs:
            c.stop()


def test_two_coordinators_never_overcommit_a_host(two: list[Coordinator],
                                                  store_url: str) -> None:
    answers: Counter[str] = Counter()
    by_coordinator: Counter[int] = Counter()

    with contextlib.ExitStack() as stack:
        stubs = [stack.enter_context(c.stub()) for c in two]

        def ask(i: int) -> None:
            try:
                stubs[i % 2].PlaceDatabase(cpb.PlaceDatabaseRequest(
                    size_class="nano", postgres_version="15",
                    request_id="race-" + secrets.token_hex(6)), timeout=30)
            except grpc.RpcError as exc:
                answers[exc.code().name] += 1
                return
            answers["OK"] += 1
            by_coordinator[i % 2] += 1

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(ask, range(ASKED)))
    rows = reservations(store_url)  # also: every host's counter equals its rows
    per_host = Counter(host for _, host, _ in rows)
    assert max(per_host.values()) <= SLOTS, per_host
    assert answers["OK"] == len(rows) <= HOSTS * SLOTS, answers
    assert set(answers) <= {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "ABORTED"}, answers
    # Both processes placed: it was a race, not one coordinator serving all.
    assert len(by_coordinator) == 2 and answers["OK"] >= HOSTS * SLOTS // 2, answers
