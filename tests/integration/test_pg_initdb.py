"""init_cluster with the real initdb, and its failure paths."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cygnet.errors import FailedPrecondition, InternalError
from cygnet.postgres.initdb import init_cluster
from cygnet.postgres.layout import ClusterLayout, postgres_user
from cygnet.postgres.versions import resolve_version
from tests.integration.pg_helpers import make_base

pytestmark = pytest.mark.integration

_, BINDIR = resolve_version("")


@pytest.fixture
def base() -> Iterator[Path]:
    path = make_base("/var/tmp/cygnet-pginit-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_refuses_non_empty_pgdata(base: Path) -> None:
    layout = ClusterLayout(base)
    layout.pgdata.mkdir()
    (layout.pgdata / "junk").write_text("x")
    with pytest.raises(FailedPrecondition):
        asyncio.run(init_cluster(BINDIR, layout.pgdata, layout.log_file))


def test_initdb_failure_carries_stderr(base: Path) -> None:
    bindir = base / "bin"
    bindir.mkdir()
    fake = bindir / "initdb"
    fake.write_text("#!/bin/sh\necho 'initdb: error: simulated failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    layout = ClusterLayout(base / "db")
    with pytest.raises(InternalError, match="simulated failure"):
        asyncio.run(init_cluster(bindir, layout.pgdata, layout.log_file))
    # The directories it created belong to postgres, ready for a retry.
    assert layout.pgdata.stat().st_uid == postgres_user().uid
    assert (layout.pgdata.stat().st_mode & 0o777) == 0o700
    assert layout.log_file.stat().st_uid == postgres_user().uid
