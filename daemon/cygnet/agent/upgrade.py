"""Upgrade rehearsal: a branch whose clone is upgraded to a newer major with pg_upgrade.

`CreateBranch(upgrade_to=18)` clones the parent as usual, starts the clone
with the parent's major (crash recovery, clone fix-ups), lists its
extensions, stops it cleanly, and upgrades it in place (postgres/upgrade.py).
The branch then records its own major (`cygnet:pg-version` on its dataset)
and starts with the new binaries; the parent and the database are untouched.
The report (checks, time, extensions the target lacks) is kept next to the
data, in upgrade.json, so it outlives the call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from cygnet.agent import layout as L
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.errors import FailedPrecondition, InvalidArgument
from cygnet.postgres import upgrade as pgup
from cygnet.postgres.layout import ClusterLayout
from cygnet.postgres.versions import installed_versions

log = logging.getLogger("cygnet.agent")

REPORT_FILE = "upgrade.json"


@dataclass(frozen=True)
class UpgradeReport:
    from_version: str
    to_version: str
    seconds: float
    checks: list[str]
    # Extensions the source major offers and the target does not (none of them
    # is created in the data: that is refused).
    missing_extensions: list[str]
    old_system_identifier: str
    new_system_identifier: str


def _key(version: str) -> tuple[int, ...]:
    # Installed names are digits and dots ("9.6", "18"); the database's too.
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def check_parent(db: DatabaseRecord, parent: BranchRecord, upgrade_to: str,
                 postgres_root: Path) -> str:
    """Refuses what a branch cannot be made from; returns the target major ("": none).

    A parent running another major than its database (an upgraded branch) is
    refused whatever is asked: its children would mix majors within a lineage
    whose resets and backups assume the database's.
    """
    source = db.version_of(parent)
    if source != db.version:
        raise FailedPrecondition(
            f"branch {parent.name!r} runs PostgreSQL {source} and database {db.name!r} "
            f"runs {db.version}: branch from a PostgreSQL {db.version} branch instead")
    if not upgrade_to:
        return ""
    installed = installed_versions(postgres_root)
    if upgrade_to not in installed:
        shown = upgrade_to if upgrade_to.isdigit() else repr(upgrade_to)
        raise InvalidArgument("upgrade_to", f"PostgreSQL {shown} is not installed on this host;"
                              f" available: {', '.join(installed) or 'none'}")
    if _key(upgrade_to) <= _key(source):
        what = "already runs" if upgrade_to == source else "cannot be downgraded to"
        raise InvalidArgument("upgrade_to", f"branch {parent.name!r} {what} PostgreSQL "
                              f"{upgrade_to}: it runs {source}; upgrades go to a newer major")
    return upgrade_to


async def upgrade_clone(host: Host, db: DatabaseRecord, branch: BranchRecord, target: str,
                        subscriptions: int) -> UpgradeReport:
    """Upgrades a fresh, not yet started clone to `target`; leaves it stopped.

    Raises FailedPrecondition naming the extensions and majors when an
    extension created in the data does not exist for `target`.
    """
    source = db.version_of(branch)
    versions = installed_versions(host.config.postgres_root)
    old_bin, new_bin = versions[source], versions[target]
    clusters, files = host.clusters, host.clusters.files(branch)
    # A clone is crash-consistent; pg_upgrade wants a clean shutdown.
    await clusters.start_clone(branch, db, subscriptions)
    in_use = await pgup.installed_extensions(clusters.socket_dir(branch), branch.port)
    await pgup.reset_column_options(clusters.socket_dir(branch), branch.port,
                                    pgup.options_unknown_to(new_bin))
    await clusters.stop(branch, "fast")
    offered = await pgup.available_extensions(new_bin)
    lacking = sorted(set(in_use) - offered)
    if lacking:
        where = "; ".join(f"{e} (in {', '.join(in_use[e])})" for e in lacking)
        raise FailedPrecondition(
            f"PostgreSQL {target} has no extension {where}, created on PostgreSQL "
            f"{source}: drop it before upgrading, or install it for {target}")
    result = await pgup.upgrade_cluster(old_bin, new_bin, _key(target)[0], files.pgdata,
                                        files.log_file, branch.port, clusters.socket_dir(branch))
    branch.version = target
    await host.zfs.set_props(branch.dataset, {L.P_VERSION: target})
    report = UpgradeReport(
        source, target, round(result.seconds, 3), result.checks,
        sorted(await pgup.available_extensions(old_bin) - offered),
        result.old_system_identifier, result.new_system_identifier)
    _write_report(files, report)
    log.info("branch %s upgraded from PostgreSQL %s to %s in %.1fs", branch.id, source, target,
             result.seconds)
    return report


def _write_report(files: ClusterLayout, report: UpgradeReport) -> None:
    (files.mount / REPORT_FILE).write_text(json.dumps(asdict(report), indent=1) + "\n")


def read_report(files: ClusterLayout) -> UpgradeReport | None:
    """The report of the upgrade that made this branch, if one did."""
    try:
        data = json.loads((files.mount / REPORT_FILE).read_text())
        return UpgradeReport(**data)
    except (OSError, ValueError, TypeError):
        return None
