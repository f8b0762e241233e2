"""`cygnetd`: the per-host daemon.

Start-up order: probe ZFS, reconcile (adopt, finish, clean up), then serve, so
a client never sees a half-reconciled host. SIGTERM stops serving but never
stops a database: Postgres runs detached from the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from cygnet import __version__, systemd
from cygnet.agent import archive, archive_janitor, offsite, replicas, replicas_api, reserved_ports
from cygnet.agent.backups.service import BackupService
from cygnet.agent.config import AgentConfig, load_config
from cygnet.agent.eventlog import EventJournal
from cygnet.agent.failsafe import Failsafe
from cygnet.agent.host import Host
from cygnet.agent.idle import IdleSuspender
from cygnet.agent.lifecycle import open_events
from cygnet.agent.lifecycle import start as start_lifecycle
from cygnet.agent.reconciler import reconcile
from cygnet.agent.registration import Membership
from cygnet.agent.schedules import Scheduler
from cygnet.agent.server import build_server, check_listener, restrict_socket, set_serving
from cygnet.agent.service import AgentService
from cygnet.agent.servicer import AgentServicer
from cygnet.agent.supervisor import Supervisor
from cygnet.agent.templates import ensure_template
from cygnet.agent.webhooks import Webhooks
from cygnet.endpoint.server import start_endpoint
from cygnet.errors import CygnetError
from cygnet.metrics.agent import AgentMetrics
from cygnet.metrics.runtime import start as start_metrics
from cygnet.postgres.versions import installed_versions
from cygnet.zfs import ZfsError

log = logging.getLogger("cygnet.agent")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cygnetd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"cygnetd {__version__}")
    p.add_argument("--config", type=Path, help="TOML file with the settings below")
    p.add_argument("--pool", action="append", dest="pools", help="ZFS pool to use (repeatable)")
    p.add_argument("--socket", dest="socket_path", type=Path, help="admin unix socket path")
    p.add_argument("--listen", help="TLS listener host:port ('' disables it)")
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--mount-root", type=Path)
    p.add_argument("--port-range", help="Postgres ports, e.g. 54000-54999")
    p.add_argument("--advertise-host", help="host name or address put in connection strings")
    p.add_argument("--postgres-listen", help="listen_addresses for the clusters")
    p.add_argument("--metrics-listen", help="Prometheus endpoint host:port ('' disables it)")
    p.add_argument("--endpoint-port", type=int,
                   help="port of the Postgres endpoint (docs/endpoints.md; 0 disables it)")
    p.add_argument("--endpoint-domain", help="DNS domain of endpoint names (DB--BRANCH.DOMAIN)")
    p.add_argument("--record-size", help="ZFS recordsize of new roots, e.g. 16K "
                   "(default: 16K on OpenZFS, 128K on zfs-fuse)")
    p.add_argument("--move-streams", type=int,
                   help="datasets a move round receives at once (default 4)")
    p.add_argument("--log-level", default="INFO")
    fleet = p.add_argument_group("fleet (docs/coordinator.md)")
    fleet.add_argument("--coordinator", help="coordinator host:port to register with")
    fleet.add_argument("--coordinator-ca", type=Path, help="fleet CA certificate")
    fleet.add_argument("--tls-cert", type=Path, help="this host's certificate")
    fleet.add_argument("--tls-key", type=Path, help="this host's key")
    fleet.add_argument("--tls-client-ca", type=Path,
                       help="require TLS clients to have certificates signed by this CA")
    fleet.add_argument("--host-id")
    fleet.add_argument("--zone")
    fleet.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    fleet.add_argument("--memory-bytes", type=int, help="memory offered to clusters")
    fleet.add_argument("--advertise-api", help="host:port the coordinator dials")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> AgentConfig:
    overrides = {k: getattr(args, k) for k in (
        "pools", "socket_path", "listen", "state_dir", "run_dir", "mount_root",
        "advertise_host", "postgres_listen", "coordinator", "coordinator_ca", "tls_cert",
        "tls_key", "tls_client_ca", "host_id", "zone", "memory_bytes", "advertise_api",
        "metrics_listen", "endpoint_port", "endpoint_domain", "record_size",
        "move_streams")}
    if args.label:
        if not all("=" in item for item in args.label):
            raise CygnetError("label: use KEY=VALUE")
        overrides["labels"] = dict(item.split("=", 1) for item in args.label)
    if args.port_range:
        low, _, high = args.port_range.partition("-")
        if not (low.isdigit() and high.isdigit()):
            raise CygnetError(f"port_range: {args.port_range!r} is not LOW-HIGH")
        overrides |= {"port_min": int(low), "port_max": int(high)}
    return load_config(args.config, overrides)


async def serve(config: AgentConfig) -> None:
    check_listener(config)  # a listener without client certificates is refused before any work
    offsite_service = offsite.start(config)  # bad offsite_* settings refuse the start
    # Branch socket dirs live below the run dir, so postgres must traverse it.
    config.run_dir.mkdir(parents=True, exist_ok=True)
    config.run_dir.chmod(0o755)
    # Before any postmaster starts: no outgoing connection may take a branch's port.
    reserved_ports.reserve(config.port_min, config.port_max)
    host = Host.create(config)
    systemd.status("probing ZFS")
    dialect = await host.zfs.dialect()
    log.info("cygnetd %s on %s, pools %s", __version__, dialect.name, ", ".join(config.pools))
    supervisor = Supervisor(host)
    systemd.status("reconciling: adopting running databases")
    await reconcile(host, supervisor)
    service = AgentService(host, supervisor)
    journal, hooks = await open_events(host)  # events, webhooks (docs/architecture.md)
    servicer = AgentServicer(service)
    server, health_servicer = await build_server(config, servicer)
    stop = asyncio.Event()
    # /metrics answers before health says SERVING, as the endpoint does. It binds
    # before the gRPC server starts: a taken metrics port then refuses the start
    # with nothing left running.
    metrics = await start_metrics(config.metrics_listen, AgentMetrics(service).build,
                                  config.metrics_interval, stop)
    await server.start()
    restrict_socket(config.admin_socket)
    # The endpoint listens before health says SERVING, so a client told the host
    # serves finds it (docs/endpoints.md).
    endpoint = await start_endpoint(service, config)
    await set_serving(health_servicer, True)
    log.info("serving")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background = _background(config, host, supervisor, service, (journal, hooks),
                             offsite_service, stop)
    systemd.ready(f"serving on {config.admin_socket}"
                  + (f" and {config.listen}" if config.listen else ""))
    await stop.wait()
    log.info("stopping: the databases keep running")
    systemd.stopping("stopping: the databases keep running")
    if metrics is not None:
        await metrics.stop()
    await set_serving(health_servicer, False)
    if endpoint is not None:
        await endpoint.stop()
    await server.stop(grace=5)
    for task in background:
        task.cancel()
    if background:
        await asyncio.wait(background, timeout=10)
    try:  # nothing runs any more: the next start serves from it (or from the last save)
        if await asyncio.wait_for(host.keeper.save(stopped=True), 15):
            log.info("saved the catalog for the next start")
    except (OSError, TimeoutError, ZfsError) as exc:
        log.warning("the catalog was not saved at the stop (%s): the last save serves the "
                    "next start", exc)


def _background(config: AgentConfig, host: Host, supervisor: Supervisor, service: AgentService,
                events: tuple[EventJournal, Webhooks],
                offsite_service: offsite.OffsiteService | None,
                stop: asyncio.Event) -> list[asyncio.Task[Any]]:
    """The daemon's loops, each ending when `stop` is set."""
    journal, hooks = events
    background = [asyncio.create_task(supervisor.run(stop)),
                  asyncio.create_task(_warm_templates(host)),
                  asyncio.create_task(systemd.watchdog(stop)),
                  # Scale to zero: idle branches are suspended (agent/idle.py).
                  asyncio.create_task(IdleSuspender(host, service.scaler).run(stop)),
                  # The catalog on disk, for a start after a crash (agent/catalog_keeper.py).
                  asyncio.create_task(host.keeper.run(stop))]
    background += start_lifecycle(host, journal, hooks, stop)  # journal, webhooks, expiry
    # WAL archiving: each branch's spool into the backup repository (agent/archive.py).
    background.append(asyncio.create_task(archive.start(config).run(stop)))
    background.append(asyncio.create_task(archive_janitor.run(host, stop)))
    # Automatic snapshots, cron backups and retention (agent/schedules.py).
    background.append(asyncio.create_task(Scheduler(BackupService(service)).run(stop)))
    if config.coordinator:
        membership = Membership(config, host)
        background.append(asyncio.create_task(membership.run(stop)))
        if config.failsafe:  # replicated primaries outlive an outage of the coordinators
            background.append(asyncio.create_task(Failsafe(
                host, membership.lease, replicas_api.peers(service)).run(stop)))
    # Standbys of other hosts' databases (agent/replicas.py): started, restarted.
    background.append(asyncio.create_task(replicas.supervise(host)))
    if offsite_service is not None:
        background.append(asyncio.create_task(offsite_service.run(stop, config.offsite_interval)))
        background.append(asyncio.create_task(
            offsite_service.run_wal_lane(stop, config.offsite_interval)))
    return background


async def _warm_templates(host: Host) -> None:
    """Makes the default major's golden templates ahead of the first CreateDatabase.

    Other majors get theirs at their first use (an initdb, 2-3 s): warming every
    installed major would cost each start an initdb per major and pool.
    """
    default = host.config.default_postgres_version
    for pool in host.config.pools:
        for version in [v for v in installed_versions(host.config.postgres_root) if v == default]:
            try:
                await ensure_template(host, pool, version)
            except Exception:
                log.exception("template for PostgreSQL %s on %s failed", version, pool)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    systemd.setup_logging(args.log_level, "cygnetd")
    try:
        config = config_from(args)
        asyncio.run(serve(config))
    except CygnetError as exc:
        print(f"cygnetd: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
