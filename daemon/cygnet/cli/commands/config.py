"""`cygnet branch config` (a branch's own Postgres settings) and `cygnet db extensions`."""

from __future__ import annotations

from typing import Any

import click

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli import complete, output
from cygnet.cli.progress import working
from cygnet.cli.refs import branch_ref, describe
from cygnet.cli.state import OrderedGroup, State, db_option, json_option, pass_state


def parse_settings(pairs: tuple[str, ...], param: str = "SETTING") -> dict[str, str]:
    """NAME=VALUE arguments as a dict; a bad one is a usage error naming it."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE, e.g. work_mem=64MB",
                                     param_hint=param)
        found[name.strip()] = value.strip()
    return found


def _config_shape(cfg: pb.BranchConfig) -> dict[str, Any]:
    return {"branch_id": cfg.branch_id, "pending_restart": cfg.pending_restart,
            "restarted": cfg.restarted,
            "settings": [{"name": s.name, "value": s.value, "current": s.current or None,
                          "pending_restart": s.pending_restart, "context": s.context or None}
                         for s in cfg.settings]}


def _show_config(state: State, cfg: pb.BranchConfig, names: tuple[str, ...] = ()) -> None:
    wanted = {n.lower() for n in names}
    settings = [s for s in cfg.settings if not wanted or s.name in wanted]
    if state.json:
        output.emit_json(_config_shape(cfg))
        return
    if not settings:
        output.show("No settings of its own: the branch runs with Cygnet's defaults.")
        return
    rows = [(s.name, s.value, s.current, "yes" if s.pending_restart else "")
            for s in settings]
    output.show(output.table(("NAME", "VALUE", "CURRENT", "PENDING RESTART"), rows))
    if cfg.restarted:
        output.show("The branch was restarted to apply them.")
    elif cfg.pending_restart:
        output.show("Some settings wait for a restart: run again with --restart, or "
                    "`cygnet branch stop` then `start`.")


@click.group(cls=OrderedGroup)
def config() -> None:
    """A branch's own Postgres settings (validated against its pg_settings).

    Stored in the branch's data directory, so a new branch inherits its
    parent's. Settings Cygnet owns (port, listen_addresses, TLS, archiving,
    hba) are refused.
    """


@config.command("get", epilog="""\b
Examples:
  cygnet branch config get shop/main
  cygnet branch config get shop/main work_mem --json""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.argument("names", metavar="[NAME]...", nargs=-1)
@db_option
@json_option
@pass_state
def get(state: State, ref: str, names: tuple[str, ...], db: str | None) -> None:
    """Show the settings stored for BRANCH, and what its server uses now."""
    req = pb.GetBranchConfigRequest(branch=branch_ref(ref, db))
    _show_config(state, state.client()._query("GetBranchConfig", req, pb.BranchConfig), names)


@config.command("set", epilog="""\b
Examples:
  cygnet branch config set shop/main work_mem=64MB statement_timeout=30s
  cygnet branch config set shop/main max_connections=200 --restart""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.argument("pairs", metavar="NAME=VALUE...", nargs=-1, required=True)
@click.option("--restart", is_flag=True,
              help="Restart the branch if a setting needs it (e.g. max_connections).")
@db_option
@json_option
@pass_state
def set_(state: State, ref: str, pairs: tuple[str, ...], restart: bool, db: str | None) -> None:
    """Set Postgres settings of BRANCH; they apply at once with a reload.

    A setting that needs a restart is stored and reported as pending until
    the branch restarts (--restart does it now).
    """
    target = branch_ref(ref, db)
    req = pb.SetBranchConfigRequest(branch=target, settings=parse_settings(pairs),
                                    restart=restart)
    with working(f"Setting {describe(target)}", f"Set {describe(target)}"):
        cfg = state.client()._change("SetBranchConfig", req, pb.BranchConfig)
    _show_config(state, cfg)


@config.command("reset", epilog="""\b
Examples:
  cygnet branch config reset shop/main work_mem
  cygnet branch config reset shop/main --all --restart""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Drop every setting of the branch.")
@click.option("--restart", is_flag=True, help="Restart the branch if a setting needs it.")
@db_option
@json_option
@pass_state
def reset(state: State, ref: str, names: tuple[str, ...], all_: bool, restart: bool,
          db: str | None) -> None:
    """Drop settings of BRANCH: they go back to Cygnet's defaults."""
    if bool(names) == all_:
        raise click.UsageError("give the NAMEs to reset, or --all")
    target = branch_ref(ref, db)
    req = pb.ResetBranchConfigRequest(branch=target, names=list(names), restart=restart)
    with working(f"Resetting settings of {describe(target)}",
                 f"Reset settings of {describe(target)}"):
        cfg = state.client()._change("ResetBranchConfig", req, pb.BranchConfig)
    _show_config(state, cfg)


@click.command("extensions", epilog="""\b
Examples:
  cygnet db extensions shop
  cygnet db extensions shop --json | jq -r '.[].name'""")
@click.argument("database", metavar="DB", shell_complete=complete.databases)
@json_option
@pass_state
def extensions(state: State, database: str) -> None:
    """List the extensions available to DB (pg_available_extensions of main)."""
    req = pb.ListExtensionsRequest(database=database)
    found = state.client()._query("ListExtensions", req, pb.ListExtensionsResponse).extensions
    if state.json:
        output.emit_json([{"name": e.name, "default_version": e.default_version,
                           "installed_version": e.installed_version or None,
                           "comment": e.comment}
                          for e in found])
        return
    rows = [(e.name, e.default_version, e.installed_version, e.comment) for e in found]
    output.show(output.table(("NAME", "DEFAULT", "INSTALLED", "COMMENT"), rows))
