"""UpdateBranch: a branch's expiry and protection, written to its dataset's properties.

The request rules (rpc/requests.py) have already checked that TTLs are
positive, times in the future and at most one expiry given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cygnet.agent import layout as L
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord
from cygnet.agent.protection import is_protected, require_admin
from cygnet.errors import FailedPrecondition, InvalidArgument

PROTECT = 1
UNPROTECT = 2


@dataclass(frozen=True)
class Change:
    expires_at: float = 0.0  # set the expiry to this unix time
    clear_expiry: bool = False
    protection: int = 0  # 0 unchanged, PROTECT, UNPROTECT
    protect_for: float = 0.0  # seconds, with PROTECT: a lease


def _stamp(when: float) -> str:
    return f"{when:.3f}"


def plan(branch: BranchRecord, change: Change, now: float) -> tuple[dict[str, str], list[str]]:
    """The properties to set and to remove; raises for what may not be done."""
    props: dict[str, str] = {}
    removed: list[str] = []
    if change.expires_at or change.clear_expiry:
        if branch.is_main:
            raise FailedPrecondition("the main branch never expires: it goes with its "
                                     "database (DeleteDatabase)")
        if change.expires_at:
            props[L.P_EXPIRES] = _stamp(change.expires_at)
        else:
            removed.append(L.P_EXPIRES)
    if change.protect_for and change.protection != PROTECT:
        raise InvalidArgument("protect_for", "goes with protection = PROTECT")
    if change.protection == PROTECT:
        until = now + change.protect_for if change.protect_for else 0.0
        if is_protected(branch, now):
            current = branch.protected_until or float("inf")
            if (until or float("inf")) < current:
                require_admin("shortening a branch's protection")
        props[L.P_PROTECTED] = "on"
        if until:
            props[L.P_PROTECTED_UNTIL] = _stamp(until)
        else:
            removed.append(L.P_PROTECTED_UNTIL)
    elif change.protection == UNPROTECT:
        if is_protected(branch, now):
            require_admin("removing a branch's protection")
        removed += [L.P_PROTECTED, L.P_PROTECTED_UNTIL]
    elif change.protection:
        raise InvalidArgument("protection", f"unknown value {change.protection}")
    return props, removed


async def update_branch(host: Host, branch: BranchRecord, change: Change) -> None:
    """Must run under the database's lock, with `branch` freshly read."""
    if branch.phase != L.PHASE_READY:
        raise FailedPrecondition(f"branch {branch.name!r} is {branch.phase}")
    props, removed = plan(branch, change, time.time())
    if props:
        await host.zfs.set_props(branch.dataset, props)
    for prop in removed:
        await host.zfs.inherit(branch.dataset, prop)
    if L.P_EXPIRES in props:
        branch.expires_at = change.expires_at
    if L.P_EXPIRES in removed:
        branch.expires_at = 0.0
    if L.P_PROTECTED in props:
        branch.protected = True
        branch.protected_until = float(props.get(L.P_PROTECTED_UNTIL, 0.0))
    if L.P_PROTECTED in removed:
        branch.protected, branch.protected_until = False, 0.0
