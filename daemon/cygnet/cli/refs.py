"""Branch references as people type them: `DB/BRANCH`, `BRANCH --db DB`, `DB`, or an id.

Names are validated by the daemon (it names the offending field); here we only
split the text into the API's BranchRef.
"""

from __future__ import annotations

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli.errors import CliError, Exit
from cygnet.names import is_id, shown


def branch_ref(text: str, db: str | None = None, bare_is_main: bool = True) -> pb.BranchRef:
    """`DB/BRANCH`; `BRANCH` with `db`; a branch id; else a bare `DB` means its main branch.

    `bare_is_main=False` is for commands where acting on main by accident would
    hurt (deleting), so a bare name without --db is refused.
    """
    if not text:
        raise CliError("branch: must not be empty", Exit.INVALID)
    if db:
        return pb.BranchRef(database=db, name=text)
    if "/" in text:
        database, name = text.split("/", 1)
        if not database:
            raise CliError(f"branch: {shown(text)} has no database before '/'", Exit.INVALID)
        return pb.BranchRef(database=database, name=name or "main")
    if is_id(text, "br"):
        return pb.BranchRef(branch_id=text)
    if not bare_is_main:
        raise CliError(f"branch: give DB/BRANCH, BRANCH with --db, or a branch id "
                       f"(got {shown(text)})", Exit.INVALID)
    return pb.BranchRef(database=text, name="")


def split_new(text: str, db: str | None) -> tuple[str, str]:
    """The database and name of a branch to create: `DB/NAME` or `NAME` with --db."""
    if db:
        return db, text
    if "/" not in text:
        raise CliError(f"branch: give DB/NAME or NAME with --db (got {shown(text)})", Exit.INVALID)
    database, name = text.split("/", 1)
    if not database:
        raise CliError(f"branch: {shown(text)} has no database before '/'", Exit.INVALID)
    return database, name


def describe(ref: pb.BranchRef) -> str:
    """How a reference is shown in progress messages."""
    if ref.branch_id:
        return ref.branch_id
    return f"{ref.database}/{ref.name or 'main'}"
