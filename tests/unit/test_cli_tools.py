"""The CLI's pure parts: global flags anywhere, ~/.pgpass lines, contexts, man pages."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cygnet.cli import contexts, pgpass
from cygnet.cli.errors import CliError, Exit
from cygnet.cli.main import hoist_globals


def test_hoist_globals() -> None:
    assert hoist_globals(["db", "list", "--json", "--debug"]) == ["--json", "--debug", "db",
                                                                   "list"]
    assert hoist_globals(["db", "list", "--context", "prod"]) == ["--context", "prod", "db",
                                                                   "list"]
    assert hoist_globals(["connect", "x", "--psql", "--", "--json"]) == [
        "connect", "x", "--psql", "--", "--json"]
    assert hoist_globals(["status", "--context=a"]) == ["--context=a", "status"]
    assert hoist_globals(["db", "list", "--socket", "/s"]) == ["--socket", "/s", "db", "list"]


def test_pgpass_replaces_in_place(tmp_path: Path) -> None:
    file = tmp_path / "pgpass"
    file.write_text("# mine\nother:5432:*:bob:x\n")
    assert pgpass.store(file, "h", 5433, "db", "u:1", "p\\w")
    assert pgpass.store(file, "h", 5433, "db", "u:1", "new")
    assert not pgpass.store(file, "h", 5433, "db", "u:1", "new")
    assert file.read_text().splitlines() == ["# mine", "other:5432:*:bob:x", "h:5433:db:u\\:1:new"]
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert pgpass.fields("h:5433:db:u\\:1:p\\\\w") == ["h", "5433", "db", "u:1", "p\\w"]


def test_contexts(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('current-context = "a"\n[contexts.a]\nhost = "h:1"\nca = "ca.pem"\n'
                    'timeout = 5\n[contexts.bad]\nport = 3\n')
    config = contexts.load(file)
    assert config.current == "a"
    assert contexts.settings(config, "a") == {"host": "h:1", "ca": tmp_path / "ca.pem",
                                              "timeout": 5.0}
    with pytest.raises(CliError) as bad:
        contexts.settings(config, "bad")
    assert bad.value.code == Exit.INVALID and "bad.port" in bad.value.message
    assert contexts.load(tmp_path / "absent.toml").contexts == {}
    file.write_text("[contexts\n")
    with pytest.raises(CliError, match="not valid TOML"):
        contexts.load(file)


def test_man_pages_are_generated_for_every_command(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "cygnet.cli.manpages", str(tmp_path)], check=True,
                   capture_output=True, timeout=60)
    names = {p.name for p in tmp_path.iterdir()}
    for page in ("cygnet.1", "cygnet-db-rm.1", "cygnet-status.1", "cygnet-connect.1",
                 "cygnet-context-list.1", "cygnet-backup-prune.1"):
        assert page in names
    rm = (tmp_path / "cygnet-db-rm.1").read_text()
    assert rm.startswith('.TH "CYGNET-DB-RM" "1"') and "\\-\\-dry\\-run" in rm
    # What setup installed is what the CLI says now (setup regenerates on every run).
    installed = Path(sys.executable).parent.parent / "share" / "man" / "man1"
    if installed.is_dir():
        for name in names:
            assert (installed / name).read_text() == (tmp_path / name).read_text(), (
                f"{installed / name} is stale: run scripts/setup")


def test_plain_tables_look_as_rich_draws_them(capsys: pytest.CaptureFixture[str]) -> None:
    from cygnet.cli import output

    rows = [["shop", "15", "nano", "running"], ["a-much-longer-name", "16", "small", ""]]
    pairs = [("Database", "shop"), ("Size class", "nano"), ("Why", "")]
    plain = (output.PlainTable(["NAME", "PG", "SIZE", "STATE"], rows, title="Title"),
             output.PlainFields(pairs))
    output.show(*plain, "end")  # stdout is captured: not a terminal
    drawn_plain = capsys.readouterr().out
    # The same through rich (a Text forces its path), as piped output always was.
    from rich.text import Text

    output.show(*plain, Text("end", style="bold"))
    drawn_rich = capsys.readouterr().out
    assert drawn_plain == drawn_rich
    assert "\x1b[" not in drawn_plain and drawn_plain.splitlines()[0] == "Title"


def test_hoisted_options_are_the_roots_and_no_subcommands() -> None:
    import click

    from cygnet.cli.app import cli
    from cygnet.cli.main import GLOBAL_FLAGS, GLOBAL_WITH_VALUE

    root = {o for p in cli.params if isinstance(p, click.Option) for o in p.opts}
    assert root >= GLOBAL_FLAGS | GLOBAL_WITH_VALUE

    def walk(command: click.Command, path: str) -> None:
        for p in command.params:
            if isinstance(p, click.Option) and path:
                clash = set(p.opts) & GLOBAL_WITH_VALUE
                assert not clash, f"{path} has its own {clash}"
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, f"{path} {name}")

    walk(cli, "")


@pytest.mark.parametrize(("running", "state", "shown"), [
    (True, "BRANCH_STATE_RUNNING", "running"),
    (False, "BRANCH_STATE_STOPPED", "stopped"),
    (False, "BRANCH_STATE_SUSPENDED", "running on a connect"),
])
def test_a_suspended_branch_is_not_shown_as_meant_to_stay_stopped(
        running: bool, state: str, shown: str) -> None:
    from cygnet.api.v1 import agent_pb2 as pb
    from cygnet.cli import views

    branch = pb.Branch(desired_running=running, state=getattr(pb, state))
    assert views._desired(branch) == shown
