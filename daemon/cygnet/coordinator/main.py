"""`cygnet-coordinator`: the fleet's one endpoint, and its certificate tool.

  cygnet-coordinator serve --store sqlite:///var/lib/cygnet/coordinator.db
  cygnet-coordinator pki init --dir /etc/cygnet/pki
  cygnet-coordinator pki issue --dir /etc/cygnet/pki --role host --name db-17 --san 10.0.0.17

See docs/coordinator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from cygnet import __version__, pki, systemd
from cygnet.coordinator.auth import load_tokens
from cygnet.coordinator.config import CoordinatorConfig, load_config
from cygnet.coordinator.failover import Failover
from cygnet.coordinator.leases import HostLeases
from cygnet.coordinator.registry import Registry
from cygnet.coordinator.remote import AgentClients
from cygnet.coordinator.router import Router
from cygnet.coordinator.server import build_server, set_serving
from cygnet.coordinator.servicer import CoordinatorServicer
from cygnet.coordinator.store import open_store
from cygnet.errors import CygnetError
from cygnet.metrics.coordinator import CoordinatorMetrics
from cygnet.metrics.runtime import start as start_metrics

log = logging.getLogger("cygnet.coordinator")

_SETTINGS = ("listen", "listen_token", "store", "tls_cert", "tls_key", "tls_ca", "tokens_file",
             "heartbeat_interval", "missed_heartbeats", "memory_fraction", "max_clusters",
             "reservation_ttl", "lease_ttl", "metrics_listen", "metrics_interval", "audit_log",
             "revoked", "host_lease_ttl", "move_orphaned_after")


# Command-line values have the settings' types: the settings are checked strictly.
_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(CoordinatorConfig)}
_KINDS: dict[str, type] = {"int": int, "float": float}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cygnet-coordinator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"cygnet-coordinator {__version__}")
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the coordinator")
    serve.add_argument("--config", type=Path, help="TOML file with the settings below")
    for name in _SETTINGS:
        kind = _KINDS.get(_FIELD_TYPES[name], str)
        serve.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    serve.add_argument("--role", action="append", default=[], metavar="IDENTITY=ROLE",
                       help="e.g. client/alice=operator or client/*=reader (repeatable; "
                            "adds to the roles setting)")
    pki_cmd = sub.add_parser("pki", help="make the fleet CA and certificates")
    pki_sub = pki_cmd.add_subparsers(dest="pki_command", required=True)
    init = pki_sub.add_parser("init", help="create the fleet CA in --dir")
    init.add_argument("--dir", type=Path, required=True)
    issue = pki_sub.add_parser("issue", help="sign a certificate with the fleet CA")
    issue.add_argument("--dir", type=Path, required=True, help="where the CA is")
    issue.add_argument("--role", choices=pki.ROLES, required=True)
    issue.add_argument("--name", required=True, help="host id, coordinator or client name")
    issue.add_argument("--san", action="append", default=[],
                       help="extra DNS name or IP address (repeatable)")
    issue.add_argument("--out", type=Path, help="where to write NAME.pem/NAME.key (--dir)")
    return p.parse_args(argv)


async def serve(config: CoordinatorConfig) -> None:
    store = open_store(config.store)
    clients = AgentClients(pki_bytes(config.tls_ca), pki_bytes(config.tls_cert),
                           pki_bytes(config.tls_key))
    registry = Registry(store, config, clients)
    router = Router(store, config, clients, registry.leadership)
    servicer = CoordinatorServicer(registry, router)
    # Host leases, before the first registration (docs/ha.md "Host leases").
    registry.leases = servicer.leases = HostLeases(store, config.host_lease_ttl)
    server, health_servicer, _ = await build_server(config, servicer,
                                                    load_tokens(config.tokens_file))
    stop = asyncio.Event()
    # Bound before the gRPC server starts: a taken metrics port refuses the start
    # with nothing left running.
    metrics = await start_metrics(config.metrics_listen, CoordinatorMetrics(registry).build,
                                  config.metrics_interval, stop)
    await server.start()
    await set_serving(health_servicer, True)
    log.info("cygnet-coordinator %s serving, store %s", __version__,
             config.store.split("@")[-1])
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    leadership = asyncio.create_task(registry.leadership.run(stop))
    housekeeping = asyncio.create_task(registry.housekeeping(stop))
    watchdog = asyncio.create_task(systemd.watchdog(stop))
    # Automatic failover after a host's lease expires (docs/ha.md "Failover").
    failover = asyncio.create_task(Failover(servicer.replicas, servicer.leases,
                                            registry.leadership).run(stop))
    # Moves left unfinished by a coordinator that died (docs/ha.md "Moving databases").
    moves = asyncio.create_task(servicer.moves.run(stop))
    systemd.ready(f"serving on {config.listen or config.listen_token}")
    await stop.wait()
    systemd.stopping()
    if metrics is not None:
        await metrics.stop()
    await watchdog
    await set_serving(health_servicer, False)
    servicer.end_streams()
    await server.stop(grace=5)
    await housekeeping
    await failover
    await moves
    await leadership
    await registry.beats.close()
    await clients.close()
    store.close()


def with_roles(config: CoordinatorConfig, items: list[str]) -> CoordinatorConfig:
    """The --role IDENTITY=ROLE options added to the settings' roles."""
    if not all("=" in item for item in items):
        raise CygnetError("role: use IDENTITY=ROLE, e.g. client/alice=operator")
    extra = dict(item.split("=", 1) for item in items)
    return dataclasses.replace(config, roles={**config.roles, **extra}) if extra else config


def pki_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CygnetError(f"{path}: {exc.strerror} (make certificates with "
                          "`cygnet-coordinator pki`)") from exc


def run_pki(args: argparse.Namespace) -> None:
    if args.pki_command == "init":
        print(f"fleet CA: {pki.init_ca(args.dir)}")
        return
    files = pki.issue(args.dir, args.role, args.name, args.san, args.out)
    print(f"certificate: {files.cert}\nkey: {files.key}\nCA: {files.ca}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    systemd.setup_logging(args.log_level, "cygnet-coordinator")
    try:
        if args.command == "pki":
            run_pki(args)
            return 0
        config = load_config(args.config, {k: getattr(args, k) for k in _SETTINGS})
        config = with_roles(config, args.role)
        asyncio.run(serve(config))
    except CygnetError as exc:
        print(f"cygnet-coordinator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
