"""A throwaway PostgreSQL server for the coordinator's shared store.

One server per test module (from pg_helpers' session template); each test
gets a fresh database in it, so stores never see each other's rows.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cygnet.postgres import sql
from cygnet.postgres.config import ClusterSettings
from cygnet.postgres.fixup import prepare_clone
from cygnet.postgres.sizes import size_class
from tests.integration.pg_helpers import Cluster, PgEnv, free_port, make_base

PASSWORD = "coord-" + secrets.token_hex(8)


class PgServer:
    def __init__(self, env: PgEnv) -> None:
        self.env = env
        # small, not nano: several coordinators each hold a few connections.
        settings = ClusterSettings(port=free_port(), listen_addresses="127.0.0.1",
                                   socket_dir=env.socket_base / "coord", size=size_class("small"))
        self.cluster: Cluster = env.adopt_dir("coord", settings)
        self.cluster.layout.mount.mkdir(mode=0o755)
        subprocess.run(["cp", "-a", str(env.template), str(self.cluster.pgdata)], check=True)
        prepare_clone(self.cluster.pgdata, self.cluster.layout.log_file, settings)
        self.cluster.start()
        asyncio.run(sql.set_password(self.cluster.socket_dir, self.cluster.port, "postgres",
                                     PASSWORD))

    def dsn(self, dbname: str = "postgres") -> str:
        return sql.connection_uri("127.0.0.1", self.cluster.port, "postgres", PASSWORD, dbname)

    def new_database(self) -> str:
        name = "coord_" + secrets.token_hex(4)
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


@pytest.fixture(scope="module")
def pg_server(pg_template: tuple[Path, Path]) -> Iterator[PgServer]:
    template, bindir = pg_template
    env = PgEnv(make_base("/var/tmp/cygnet-pgtest-"), make_base("/tmp/cygs-"), template, bindir)
    try:
        yield PgServer(env)
    finally:
        env.cleanup()
        shutil.rmtree(env.base, ignore_errors=True)
        shutil.rmtree(env.socket_base, ignore_errors=True)
