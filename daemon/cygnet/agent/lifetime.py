"""UpdateBranch: a branch's expiry and protection, written to its dataset's properties;
their fields in Branch messages, and Event messages.

The request rules (rpc/requests.py) have already checked that TTLs are
positive, times in the future and at most one expiry given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cygnet.agent import layout as L
from cygnet.agent.events import Event
from cygnet.agent.expiry import NEVER, Children, effective_expiry
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.protection import is_protected, require_admin
from cygnet.agent.service import AgentService, BranchRef, BranchView
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.errors import FailedPrecondition, InvalidArgument
from cygnet.rpc.convert import timestamp

PROTECT = pb.PROTECTION_CHANGE_PROTECT
UNPROTECT = pb.PROTECTION_CHANGE_UNPROTECT


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
        until = round(now + change.protect_for, 3) if change.protect_for else 0.0
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


def branch_fields(view: BranchView, kids: Children | None = None) -> dict[str, Any]:
    """The expiry and protection fields of a Branch message (convert.branch)."""
    b, now = view.record, time.time()
    fields: dict[str, Any] = {"protected": is_protected(b, now)}
    if b.expires_at:
        fields["expires_at"] = timestamp(b.expires_at)
    effective = effective_expiry(view.database, b, now, kids)
    if effective != NEVER:
        fields["effective_expires_at"] = timestamp(effective)
    if fields["protected"] and b.protected_until:
        fields["protected_until"] = timestamp(b.protected_until)
    return fields


def change_of(req: pb.UpdateBranchRequest) -> Change:
    expires = 0.0
    if req.HasField("ttl"):
        expires = time.time() + req.ttl.ToNanoseconds() / 1e9
    elif req.HasField("expires_at"):
        expires = req.expires_at.ToNanoseconds() / 1e9
    protect_for = req.protect_for.ToNanoseconds() / 1e9 if req.HasField("protect_for") else 0.0
    return Change(round(expires, 3), req.clear_expiry, int(req.protection), protect_for)


def create_expiry(req: pb.CreateBranchRequest) -> float:
    """CreateBranch's ttl or expires_at as a unix time (0: none)."""
    if req.HasField("ttl"):  # to the millisecond, as the property keeps it
        return round(time.time() + req.ttl.ToNanoseconds() / 1e9, 3)
    if req.HasField("expires_at"):
        return round(req.expires_at.ToNanoseconds() / 1e9, 3)
    return 0.0


async def update(service: AgentService, ref: BranchRef, change: Change, request_id: str
                 ) -> BranchView:
    async def action(db: DatabaseRecord, branch: BranchRecord) -> BranchView:
        await update_branch(service.host, branch, change)
        return service.view(db, branch)

    return await service._with_branch(ref, request_id, "UpdateBranch", action)


def event_message(event: Event) -> pb.Event:
    return pb.Event(cursor=event.cursor, time=timestamp(event.time), kind=event.kind.value,
                    database_id=event.database_id, database_name=event.database,
                    branch_id=event.branch_id, branch_name=event.branch, reason=event.reason)
