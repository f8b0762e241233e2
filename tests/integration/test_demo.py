"""scripts/demo up and down, twice: the way down waits for cygnetd to exit before
destroying the pool, so a second round starts clean. No apt here
(CYGNET_DEMO_SKIP_SETUP), its own pool, directories and ports."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest

from tests.harness import REPO, WORK, free_port, run

pytestmark = pytest.mark.integration


def demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(REPO / "scripts/demo"), *args], env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    assert done.returncode == 0, f"demo {args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_demo_up_and_down_twice() -> None:
    base = WORK / ("demo" + secrets.token_hex(3))
    pool = "cygdemo" + secrets.token_hex(3)
    env = {**os.environ, "CYGNET_DEMO_SKIP_SETUP": "1", "CYGNET_DEMO_POOL": pool,
           "CYGNET_DEMO_IMAGE": str(base / "pool.img"), "CYGNET_DEMO_SIZE": "2G",
           "CYGNET_DEMO_PKI": str(base / "pki"), "CYGNET_DEMO_DIR": str(base / "d"),
           "CYGNET_DEMO_PORT": str(free_port()), "CYGNET_DEMO_PG_PORTS": "61000-61099"}
    try:
        for _ in range(2):
            up = demo(env)
            # main's row only on main; both rows on the feature branch.
            assert "feature" in up.stdout and "main" in up.stdout
            # Suspended, then woken by a connect to its unchanged string.
            woke = up.stdout[up.stdout.index("suspended"):]
            assert "answered" in woke and "running" in woke.split("answered", 1)[1]
            assert "done: cygnetd keeps running" in up.stderr
            assert run("zpool", "list", pool, check=False).returncode == 0
            down = demo(env, "--down")
            assert "demo removed" in down.stderr
            backups = base / "d/state/backups"
            if backups.exists():  # kept on purpose, and said so
                assert f"kept {backups}" in down.stderr, down.stderr
            assert "pool is busy" not in down.stderr
            assert run("zpool", "list", pool, check=False).returncode != 0
            assert not (base / "d/run/cygnetd-demo.pid").exists()
            # The catalog kept for the pool went with it.
            assert not (base / "d/state/catalog.json").exists()
            assert not (base / "pool.img").exists()
    finally:
        pidfile = base / "d/run/cygnetd-demo.pid"
        if pidfile.exists():  # a failed round: stop our daemon, then our pool
            subprocess.run(["kill", pidfile.read_text().strip()], check=False)
        if run("zpool", "list", pool, check=False).returncode == 0:
            run("zpool", "destroy", "-f", pool, check=False)
        shutil.rmtree(base, ignore_errors=True)
