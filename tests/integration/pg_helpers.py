"""Fixtures for integration tests that run real PostgreSQL servers.

Clusters live under a fresh /var/tmp/cygnet-pgtest-* dir (pytest's tmp_path is
0700 root, which the postgres user cannot enter). One initdb'd template per
session is copied for each cluster, as the agent clones its golden template.
Every postmaster started is stopped at teardown, even when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from cygnet.postgres import process
from cygnet.postgres.config import ClusterSettings
from cygnet.postgres.fixup import prepare_clone
from cygnet.postgres.initdb import init_cluster
from cygnet.postgres.layout import ClusterLayout
from cygnet.postgres.sizes import size_class
from cygnet.postgres.versions import resolve_version
from tests.harness import free_port


def client_port(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The local port of a client's connection (its backend sees it as inet_client_port)."""
    with socket.socket(fileno=conn.pgconn.socket) as sock:
        try:
            return int(sock.getsockname()[1])
        finally:
            sock.detach()  # libpq's descriptor, not ours to close


@dataclass
class Cluster:
    """One test cluster: its layout, settings and bin dir."""

    layout: ClusterLayout
    settings: ClusterSettings
    bindir: Path

    @property
    def pgdata(self) -> Path:
        return self.layout.pgdata

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def socket_dir(self) -> Path:
        return self.settings.socket_dir

    def start(self, timeout: float = 30.0) -> process.Postmaster:
        return asyncio.run(process.start(self.bindir, self.pgdata, self.layout.log_file, timeout))

    def stop(self, mode: str = "fast") -> None:
        asyncio.run(process.stop(self.pgdata, mode, timeout=30.0))


@dataclass
class PgEnv:
    """Creates clusters from the session template and cleans them all up."""

    base: Path
    socket_base: Path
    template: Path
    bindir: Path
    clusters: list[Cluster] = field(default_factory=list)

    def settings(self, name: str, **kw: object) -> ClusterSettings:
        return ClusterSettings(
            port=free_port(),
            listen_addresses="127.0.0.1",
            socket_dir=self.socket_base / name,
            size=size_class("nano"),
            **kw,  # type: ignore[arg-type]
        )

    def adopt_dir(self, name: str, settings: ClusterSettings) -> Cluster:
        """Registers the cluster at base/name (for cleanup) without creating it."""
        cluster = Cluster(ClusterLayout(self.base / name), settings, self.bindir)
        self.clusters.append(cluster)
        return cluster

    def new_cluster(self, name: str, **kw: object) -> Cluster:
        """A copy of the template at base/name with its own port and socket dir."""
        cluster = self.adopt_dir(name, self.settings(name, **kw))
        cluster.layout.mount.mkdir(mode=0o755)
        subprocess.run(["cp", "-a", str(self.template), str(cluster.pgdata)], check=True)
        prepare_clone(cluster.pgdata, cluster.layout.log_file, cluster.settings)
        return cluster

    def cleanup(self) -> None:
        for cluster in self.clusters:
            try:
                asyncio.run(process.stop(cluster.pgdata, "immediate", timeout=10.0))
            except Exception:
                pm = process.find_live_postmaster(cluster.pgdata)
                if pm is not None:
                    os.kill(pm.pid, signal.SIGKILL)


def make_base(prefix: str) -> Path:
    """A fresh root-owned 0755 dir that the postgres user can traverse."""
    path = Path(prefix + secrets.token_hex(4))
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[tuple[Path, Path]]:
    """(template pgdata, bindir): one initdb per test session, cleanly shut down."""
    _, bindir = resolve_version("")
    base = make_base("/var/tmp/cygnet-pgtpl-")
    layout = ClusterLayout(base)
    asyncio.run(init_cluster(bindir, layout.pgdata, layout.log_file))
    yield layout.pgdata, bindir
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_env(pg_template: tuple[Path, Path]) -> Iterator[PgEnv]:
    template, bindir = pg_template
    env = PgEnv(make_base("/var/tmp/cygnet-pgtest-"), make_base("/tmp/cygs-"), template, bindir)
    try:
        yield env
    finally:
        env.cleanup()
        shutil.rmtree(env.base, ignore_errors=True)
        shutil.rmtree(env.socket_base, ignore_errors=True)
