"""Exit codes and error lines of `cygnet`, and output hygiene when piped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.harness import Daemon, free_port
from tests.integration.test_cli_support import (
    ANSI,
    CONFLICT,
    INVALID,
    NOT_FOUND,
    UNREACHABLE,
    assert_one_error_line,
    cli_env,
    cygnet,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db(daemon: Daemon) -> Iterator[str]:
    name = unique("clie")
    cygnet(daemon, "db", "create", name, "--size", "nano")
    yield name
    cygnet(daemon, "db", "rm", name, "--yes", expect=None)


def test_invalid_name_is_exit_2_with_the_field(daemon: Daemon) -> None:
    result = cygnet(daemon, "db", "create", "a/b", expect=INVALID)
    assert_one_error_line(result, "name: must not contain '/'")


def test_invalid_branch_name(daemon: Daemon, db: str) -> None:
    result = cygnet(daemon, "branch", "create", f"{db}/x@y", expect=INVALID)
    assert_one_error_line(result, "must not contain '@'")
    # A bare name where deleting main by accident must not happen.
    assert_one_error_line(cygnet(daemon, "branch", "rm", db, expect=INVALID), "DB/BRANCH")


def test_usage_errors_are_exit_2(daemon: Daemon) -> None:
    assert_one_error_line(cygnet(daemon, "db", "create", expect=INVALID), "Missing argument")
    assert_one_error_line(cygnet(daemon, "db", "frobnicate", expect=INVALID), "frobnicate")
    assert_one_error_line(cygnet(daemon, "--nope", expect=INVALID), "--nope")


def test_not_found_is_exit_3(daemon: Daemon, db: str) -> None:
    missing = unique("missing")
    assert_one_error_line(cygnet(daemon, "db", "show", missing, expect=NOT_FOUND), missing)
    assert_one_error_line(cygnet(daemon, "connect", f"{db}/nope", expect=NOT_FOUND), "nope")
    cygnet(daemon, "branch", "show", "br0000000000", expect=NOT_FOUND)
    cygnet(daemon, "snapshot", "rm", db, "nope", expect=NOT_FOUND)
    cygnet(daemon, "db", "rm", missing, "--yes", expect=NOT_FOUND)


def test_conflicts_are_exit_4(daemon: Daemon, db: str) -> None:
    # ALREADY_EXISTS
    assert_one_error_line(cygnet(daemon, "db", "create", db, expect=CONFLICT), "exists")
    cygnet(daemon, "branch", "create", f"{db}/kid")
    cygnet(daemon, "branch", "create", f"{db}/kid", expect=CONFLICT)
    # FAILED_PRECONDITION: main has a child branch.
    result = cygnet(daemon, "branch", "rm", f"{db}/main", expect=CONFLICT)
    assert_one_error_line(result)
    cygnet(daemon, "branch", "rm", f"{db}/kid")


def test_unreachable_is_exit_5(tmp_path: Path) -> None:
    missing = tmp_path / "no.sock"
    result = cygnet(None, "--socket", str(missing), "db", "list", expect=UNREACHABLE)
    assert_one_error_line(result, str(missing), "no such socket")
    env = cli_env(CYGNET_SOCKET=str(missing))
    assert_one_error_line(cygnet(None, "branch", "list", env=env, expect=UNREACHABLE))
    closed = f"127.0.0.1:{free_port()}"
    result = cygnet(None, "--host", closed, "host", "status", expect=UNREACHABLE)
    assert_one_error_line(result, closed)
    # `version` still answers for the client.
    out = cygnet(None, "--socket", str(missing), "version", "--json").json()
    assert out["daemon_version"] is None and out["client_version"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = cygnet(None, "--debug", "--socket", str(tmp_path / "x"), "db", "list",
                    expect=UNREACHABLE)
    assert "Traceback" in result.err and "cygnet: error:" in result.err


def test_piped_output_has_no_ansi_even_when_forced(daemon: Daemon, db: str) -> None:
    env = cli_env(FORCE_COLOR="1", TTY_COMPATIBLE="1", CLICOLOR_FORCE="1")
    for args in (["db", "list"], ["db", "show", db], ["branch", "tree"], ["branch", "list"],
                 ["host", "status"], ["branch", "stop", db], ["branch", "start", db],
                 ["db", "show", "nope"]):
        result = cygnet(daemon, *args, env=env, expect=None)
        assert not ANSI.search(result.out + result.err), args
        assert "…" not in result.err  # no progress lines either
    # A long operation piped prints its result and nothing else.
    made = cygnet(daemon, "branch", "create", f"{db}/piped", env=env)
    assert made.err == "" and not ANSI.search(made.out)
    assert made.out.startswith("Branch ") and "postgresql://" in made.out
    cygnet(daemon, "branch", "rm", f"{db}/piped", env=env)


def test_a_name_shaped_like_an_id_is_exit_2(daemon: Daemon, db: str) -> None:
    # `db create victim` gave an id; `db create <that id>` then `db rm <that id>`
    # deleted victim. Now the name is refused, and so is a branch named like an id.
    victim_id = cygnet(daemon, "db", "show", db, "--json").json()["id"]
    result = cygnet(daemon, "db", "create", victim_id, expect=INVALID)
    assert_one_error_line(result, "name:", "id")
    branch_id = cygnet(daemon, "branch", "show", db, "--json").json()["id"]
    assert_one_error_line(cygnet(daemon, "branch", "create", f"{db}/{branch_id}",
                                 expect=INVALID), "name:")
    # A branch id where a database is expected deletes nothing.
    assert_one_error_line(cygnet(daemon, "db", "rm", branch_id, "--yes", expect=INVALID),
                          "branch id")
    assert cygnet(daemon, "db", "show", victim_id, "--json").json()["name"] == db


def test_a_huge_reference_is_a_short_error(daemon: Daemon) -> None:
    huge = "x" * 20_000
    for args in (["db", "show", huge], ["branch", "show", f"{huge}/main"],
                 ["db", "rm", huge, "--yes"]):
        result = cygnet(daemon, *args, expect=INVALID)
        assert_one_error_line(result, "at most 63 characters")
        assert len(result.err) < 300
