"""Who may call what: one table from every RPC to the roles allowed, default deny.

Roles:
  admin        everything;
  operator     everything except deleting databases and backups;
  reader       get, list and status calls, never a connection secret;
  host         an agent calling the coordinator (or, later, another agent);
  coordinator  the coordinator calling an agent on its own account.

A method missing from PERMISSIONS is refused to everyone (tests/unit/test_roles.py
checks that every method in the proto descriptors has an entry). Identities
(the certificate's ROLE/NAME common name, or token/NAME) get their role from the
`roles` setting; host and coordinator certificates have theirs by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from cygnet.errors import InvalidArgument


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    READER = "reader"
    HOST = "host"
    COORDINATOR = "coordinator"


class Kind(StrEnum):
    """What a call does; the roles and whether it is audited follow from it."""

    READ = "read"
    CHANGE = "change"
    DELETE = "delete"  # deletes a database or backups: admin only
    SECRET = "secret"  # returns a connection secret
    REGISTER = "register"  # a host joins the fleet
    HEARTBEAT = "heartbeat"
    TRANSFER = "transfer"  # agent to agent: replication slots, secrets, zfs streams


_A, _O, _R, _H, _C = Role.ADMIN, Role.OPERATOR, Role.READER, Role.HOST, Role.COORDINATOR
ROLES_BY_KIND: dict[Kind, frozenset[Role]] = {
    Kind.READ: frozenset({_A, _O, _R, _H, _C}),
    Kind.CHANGE: frozenset({_A, _O, _C}),
    Kind.DELETE: frozenset({_A, _C}),
    Kind.SECRET: frozenset({_A, _O, _C}),
    Kind.REGISTER: frozenset({_H}),
    Kind.HEARTBEAT: frozenset({_H}),
    # The handlers take the calling host from a host certificate and refuse any
    # other (agent/replicas_api.py); admin gets that refusal after its input is
    # checked like any other call's.
    Kind.TRANSFER: frozenset({_H, _A}),
}
# Mutating calls and secret reads get an audit line; reads and heartbeats do not.
AUDITED = frozenset({Kind.CHANGE, Kind.DELETE, Kind.SECRET, Kind.REGISTER, Kind.TRANSFER})

_AGENT = "/cygnet.v1.Agent/"
_BACKUPS = "/cygnet.v1.Backups/"
_COORDINATOR = "/cygnet.v1.Coordinator/"
_SCHEMA = "/cygnet.v1.Schema/"

_TABLE: dict[str, Kind] = {
    _AGENT + "CreateDatabase": Kind.CHANGE,
    _AGENT + "GetDatabase": Kind.READ,
    _AGENT + "ListDatabases": Kind.READ,
    _AGENT + "DeleteDatabase": Kind.DELETE,
    _AGENT + "CreateBranch": Kind.CHANGE,
    _AGENT + "GetBranch": Kind.READ,
    _AGENT + "ListBranches": Kind.READ,
    _AGENT + "DeleteBranch": Kind.CHANGE,
    _AGENT + "ResetBranch": Kind.CHANGE,
    _AGENT + "PromoteBranch": Kind.CHANGE,
    _AGENT + "StartBranch": Kind.CHANGE,
    _AGENT + "StopBranch": Kind.CHANGE,
    _AGENT + "GetConnection": Kind.SECRET,
    _AGENT + "BranchHistory": Kind.READ,
    _AGENT + "RestoreBranch": Kind.CHANGE,
    _AGENT + "RestoreDatabase": Kind.CHANGE,
    _AGENT + "CreateSnapshot": Kind.CHANGE,
    _AGENT + "ListSnapshots": Kind.READ,
    _AGENT + "DeleteSnapshot": Kind.CHANGE,
    _AGENT + "GetHostStatus": Kind.READ,
    _AGENT + "GetBranchConfig": Kind.READ,
    _AGENT + "SetBranchConfig": Kind.CHANGE,
    _AGENT + "ResetBranchConfig": Kind.CHANGE,
    _AGENT + "ListExtensions": Kind.READ,
    _AGENT + "UpdateBranch": Kind.CHANGE,  # removing protection also needs admin (agent)
    _AGENT + "WatchEvents": Kind.READ,
    _AGENT + "SuspendBranch": Kind.CHANGE,
    _AGENT + "ResumeBranch": Kind.CHANGE,
    # Replicas (docs/ha.md): ListReplicas carries no password.
    _AGENT + "CreateReplica": Kind.CHANGE,
    _AGENT + "ListReplicas": Kind.READ,
    _AGENT + "DeleteReplica": Kind.CHANGE,
    _AGENT + "HandOverPrimary": Kind.CHANGE,
    _AGENT + "PromoteReplica": Kind.CHANGE,
    _AGENT + "DemoteToReplica": Kind.CHANGE,
    _AGENT + "PrepareFailover": Kind.CHANGE,
    _AGENT + "ConfirmPrimary": Kind.TRANSFER,
    _AGENT + "PrepareReplica": Kind.TRANSFER,
    _AGENT + "ReleaseReplica": Kind.TRANSFER,
    _AGENT + "SendSnapshot": Kind.TRANSFER,
    # Moves (agent/moves.py): EndMove of a moved database destroys the source's copy.
    _AGENT + "MoveIn": Kind.CHANGE,
    _AGENT + "PrepareMove": Kind.TRANSFER,
    _AGENT + "SendMoveStream": Kind.TRANSFER,
    _AGENT + "SendMoveArchive": Kind.TRANSFER,
    _AGENT + "SendMoveBackups": Kind.TRANSFER,
    _AGENT + "EndMove": Kind.DELETE,
    _BACKUPS + "CreateBackup": Kind.CHANGE,
    _BACKUPS + "ListBackups": Kind.READ,
    # Reads every block of a repository: not for readers.
    _BACKUPS + "VerifyBackups": Kind.CHANGE,
    _BACKUPS + "RestoreBackup": Kind.CHANGE,
    _BACKUPS + "PruneBackups": Kind.DELETE,
    # Shows data-level differences between branches: not for readers.
    _BACKUPS + "DiffBranches": Kind.CHANGE,
    _BACKUPS + "GetSchedule": Kind.READ,
    _BACKUPS + "SetSchedule": Kind.CHANGE,
    # Schema only, never data: readers may compare branches.
    _SCHEMA + "SchemaDiff": Kind.READ,
    _SCHEMA + "MergeSchema": Kind.CHANGE,
    _SCHEMA + "ApplyMigrations": Kind.CHANGE,
    _SCHEMA + "MigrationStatus": Kind.READ,
    _SCHEMA + "RollbackMigrations": Kind.CHANGE,
    # Rules name columns and say how they are masked: no data, but not for readers.
    _SCHEMA + "SetMaskingRules": Kind.CHANGE,
    _SCHEMA + "GetMaskingRules": Kind.CHANGE,
    _SCHEMA + "CreateMaskedBranch": Kind.CHANGE,
    _COORDINATOR + "RegisterHost": Kind.REGISTER,
    _COORDINATOR + "Heartbeat": Kind.HEARTBEAT,
    _COORDINATOR + "HeartbeatStream": Kind.HEARTBEAT,
    _COORDINATOR + "ListHosts": Kind.READ,
    _COORDINATOR + "GetHost": Kind.READ,
    _COORDINATOR + "DrainHost": Kind.CHANGE,
    _COORDINATOR + "UndrainHost": Kind.CHANGE,
    _COORDINATOR + "PlaceDatabase": Kind.CHANGE,
    _COORDINATOR + "CreateDatabase": Kind.CHANGE,
    _COORDINATOR + "GetDatabase": Kind.READ,
    _COORDINATOR + "ListDatabases": Kind.READ,
    _COORDINATOR + "DeleteDatabase": Kind.DELETE,
    _COORDINATOR + "CreateBranch": Kind.CHANGE,
    _COORDINATOR + "GetBranch": Kind.READ,
    _COORDINATOR + "ListBranches": Kind.READ,
    _COORDINATOR + "DeleteBranch": Kind.CHANGE,
    _COORDINATOR + "ResetBranch": Kind.CHANGE,
    _COORDINATOR + "GetConnection": Kind.SECRET,
    _COORDINATOR + "CreateReplica": Kind.CHANGE,
    _COORDINATOR + "ListReplicas": Kind.READ,
    _COORDINATOR + "DeleteReplica": Kind.CHANGE,
    _COORDINATOR + "PromoteReplica": Kind.CHANGE,
    _COORDINATOR + "MoveDatabase": Kind.CHANGE,
}

# Full method name -> what it does; the one table both daemons authorize by.
PERMISSIONS: Mapping[str, Kind] = _TABLE

# Open to anyone who completed the handshake: load balancers and probes.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def kind_of(method: str) -> Kind | None:
    return PERMISSIONS.get(method)


def allowed(role: str, method: str) -> bool:
    kind = kind_of(method)
    return kind is not None and role in ROLES_BY_KIND[kind]


def audited(method: str) -> bool:
    kind = kind_of(method)
    return kind is None or kind in AUDITED  # unknown methods: refused, and audited


DEFAULT_ROLES = {"host/*": Role.HOST.value, "coordinator/*": Role.COORDINATOR.value}


@dataclass(frozen=True)
class RoleMap:
    """Identity -> role, from the `roles` setting: exact "client/alice" entries win over
    "client/*" patterns; host and coordinator certificates have their roles by default."""

    entries: Mapping[str, str]

    @classmethod
    def from_setting(cls, setting: Mapping[str, str], field: str = "roles") -> RoleMap:
        known = {r.value for r in Role}
        for identity, role in setting.items():
            if not isinstance(role, str) or role not in known:
                raise InvalidArgument(field, f"{identity}: {role!r} is not one of "
                                      f"{', '.join(sorted(known))}")
            if "/" not in identity:
                raise InvalidArgument(field, f"{identity!r} is not KIND/NAME or KIND/*")
        return cls({**DEFAULT_ROLES, **setting})

    def role_of(self, identity: str) -> str | None:
        if identity in self.entries:
            return self.entries[identity]
        kind = identity.partition("/")[0]
        return self.entries.get(f"{kind}/*")
