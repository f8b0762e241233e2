"""The daemons' console scripts: a clear message, not a traceback, when the
`daemon` extra is missing (a CLI-only install: `pip install cygnet`)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable

# Importable name -> distribution, for the `daemon` extra in pyproject.toml.
DAEMON_MODULES = {
    "systemd": "systemd-python",
    "psycopg": "psycopg",
    "prometheus_client": "prometheus-client",
    "msgspec": "msgspec",
    "zstandard": "zstandard",
    "xxhash": "xxhash",
    "grpc_health": "grpcio-health-checking",
    "grpc_reflection": "grpcio-reflection",
    "boto3": "boto3",
    "croniter": "croniter",
}


def missing_daemon_packages() -> list[str]:
    return [dist for module, dist in DAEMON_MODULES.items()
            if importlib.util.find_spec(module) is None]


def _require_daemon_extra(prog: str) -> None:
    missing = missing_daemon_packages()
    if missing:
        sys.exit(f"{prog}: needs the daemon extra, missing {', '.join(missing)}: "
                 "pip install 'cygnet[daemon]'")


def _run(prog: str, load: Callable[[], Callable[[], object]]) -> None:
    _require_daemon_extra(prog)
    result = load()()
    if isinstance(result, int):
        sys.exit(result)


def cygnetd() -> None:
    def load() -> Callable[[], object]:
        from cygnet.agent.main import main
        return main
    _run("cygnetd", load)


def coordinator() -> None:
    def load() -> Callable[[], object]:
        from cygnet.coordinator.main import main
        return main
    _run("cygnet-coordinator", load)
