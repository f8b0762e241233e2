"""Protected branches: no delete, reset or expiry without the admin's override.

Protection is the ZFS user property `cygnet:protected=on` on the branch's
dataset, with an optional lease `cygnet:protected-until` (unix time): once it
passes, the branch is unprotected again, so a forgotten protected branch does
not hold its space for ever. `main` is not protected by default: it cannot be
deleted but with its database (DeleteDatabase, admin only) and never expires.

The override (`override_protection` on the request) is honoured only for the
admin role; removing a protection or shortening its lease needs admin too,
else an operator could lift it and delete.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from cygnet.agent.inventory import BranchRecord
from cygnet.errors import FailedPrecondition, PermissionDenied
from cygnet.rpc.auth import CALLER
from cygnet.rpc.roles import Role


def is_protected(branch: BranchRecord, now: float | None = None) -> bool:
    """Protected now: the flag is on and its lease, if any, has not passed."""
    if not branch.protected:
        return False
    return not branch.protected_until or branch.protected_until > (now or time.time())


def until_text(branch: BranchRecord) -> str:
    if not branch.protected_until:
        return "until its protection is removed"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(branch.protected_until))
    return f"until {stamp}"


def require_admin(what: str) -> None:
    """Refuses `what` unless the caller has the admin role (internal calls have no caller)."""
    caller = CALLER.get()
    if caller is None or caller.role == Role.ADMIN:
        return
    role = caller.role or "no role"
    raise PermissionDenied(f"{what} needs the admin role; {caller.identity} is {role}")


def guard(branches: Iterable[BranchRecord], action: str, override: bool,
          database: str = "") -> None:
    """Refuses `action` (delete, reset) on protected branches, naming the first one,
    unless an admin asked for the override. Checks only: nothing is changed."""
    if override:
        require_admin("override_protection")
        return
    now = time.time()
    for branch in branches:
        if is_protected(branch, now):
            where = f"{database}/{branch.name}" if database else branch.name
            raise FailedPrecondition(
                f"branch {where!r} is protected {until_text(branch)}: {action} needs "
                "override_protection (admin role), or remove the protection first")
