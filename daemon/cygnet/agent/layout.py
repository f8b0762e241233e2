"""Where things live: dataset names, property names, paths and generated ids.

Dataset names are built from generated ids only; human names are stored in
`cygnet:name` properties and never reach a dataset name, path or argv.

    POOL/cygnet                         root, mountpoint MOUNT_ROOT/POOL
    POOL/cygnet/templates/pgNN          golden template, snapshot @golden
    POOL/cygnet/reserve-N               space held back for deletes on a full pool
    POOL/cygnet/db/DBID                 one database (canmount=off), its props
    POOL/cygnet/db/DBID/BRANCHID[-GEN]  one branch (files: cygnet.postgres.layout);
                                        a reset makes a new generation
    POOL/cygnet/db/DBID/BRANCHID@SNAPID a snapshot (user, or a branch point)
"""

from __future__ import annotations

import secrets
import string
from pathlib import Path

from cygnet.states import Phase

# User properties (the source of truth for what exists on the host).
P_KIND = "cygnet:kind"  # database | branch | template | snapshot
P_ID = "cygnet:id"
P_NAME = "cygnet:name"
P_DATABASE = "cygnet:database"  # on branches: the database id
P_PARENT = "cygnet:parent"  # on branches: the parent branch id ("" for main)
P_PORT = "cygnet:port"
P_DESIRED = "cygnet:desired"  # running | stopped | suspended
P_PHASE = "cygnet:phase"  # creating | ready | resetting | deleting
P_CREATED = "cygnet:created"  # unix time, float
P_REQUEST = "cygnet:request"  # request id of the call that created it
P_VERSION = "cygnet:pg-version"
P_SIZE = "cygnet:size-class"
P_SNAP_KIND = "cygnet:snapshot-kind"  # user | branch-point
# On snapshots: subscriptions the cluster had when it was taken (absent: unknown).
P_SUBS = "cygnet:subscriptions"

# On branches: seconds without a client connection before the branch is
# suspended; 0: never; absent: the host's suspend_after (agent/scale.py).
P_SUSPEND_AFTER = "cygnet:suspend-after"

# On a reset's replacement clone: the dataset it replaces. While both exist the
# old one is the branch; once the old one is destroyed the replacement is.
P_REPLACES = "cygnet:replaces"
# On the replaced dataset, once the branch's identity has moved to its
# replacement (agent/swap.py): from then on the replacement is the branch.
P_REPLACED_BY = "cygnet:replaced-by"
# On a replacement, written before the swap: the branch name the replaced data
# keeps (absent: the replaced data is destroyed).
P_SWAP_KEEP = "cygnet:swap-keep"

# On branches: expiry (agent/expiry.py) and protection with its lease
# (agent/protection.py); unix times, "on". Absent: none.
P_EXPIRES = "cygnet:expires"
P_PROTECTED = "cygnet:protected"
P_PROTECTED_UNTIL = "cygnet:protected-until"

USER_PROPS: tuple[str, ...]  # grows below (WAL properties)
USER_PROPS = (P_KIND, P_ID, P_NAME, P_DATABASE, P_PARENT, P_PORT, P_DESIRED, P_PHASE,
              P_EXPIRES, P_PROTECTED, P_PROTECTED_UNTIL,
              P_CREATED, P_REQUEST, P_VERSION, P_SIZE, P_SNAP_KIND, P_SUBS, P_REPLACES,
              P_REPLACED_BY, P_SWAP_KEEP, P_SUSPEND_AFTER)

PHASE_CREATING = Phase.CREATING
PHASE_READY = Phase.READY
PHASE_RESETTING = Phase.RESETTING
PHASE_DELETING = Phase.DELETING

GOLDEN = "golden"

_ALPHABET = string.ascii_lowercase + string.digits


def new_id(prefix: str) -> str:
    """A short random id, safe in dataset names: e.g. `br4k2m9x0q1z`."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def root(pool: str) -> str:
    return f"{pool}/cygnet"


def templates_root(pool: str) -> str:
    return f"{root(pool)}/templates"


def template(pool: str, version: str) -> str:
    return f"{templates_root(pool)}/pg{version}"


def reserve(pool: str, chunk: int) -> str:
    """Datasets holding `refreservation` bytes, destroyed to make room (agent/space.py)."""
    return f"{root(pool)}/reserve-{chunk}"


def databases_root(pool: str) -> str:
    return f"{root(pool)}/db"


def database(pool: str, database_id: str) -> str:
    return f"{databases_root(pool)}/{database_id}"


def branch(pool: str, database_id: str, branch_id: str, generation: str = "") -> str:
    """A branch's dataset; a reset gives the branch a new one with a new generation."""
    leaf = f"{branch_id}-{generation}" if generation else branch_id
    return f"{database(pool, database_id)}/{leaf}"


def pool_of(dataset: str) -> str:
    return dataset.split("/", 1)[0]


def pool_mountpoint(mount_root: Path, pool: str) -> Path:
    return mount_root / pool


def mountpoint(mount_root: Path, dataset: str) -> Path:
    """Datasets inherit their mountpoint from POOL/cygnet, so the path follows the name."""
    return Path(mount_path(str(mount_root), dataset))


def mount_path(mount_root: str, dataset: str) -> str:
    """mountpoint() as a string: cheap enough for a view of every branch."""
    pool, rest = dataset.split("/", 1)
    return f"{mount_root}/{pool}/{rest.removeprefix('cygnet/')}"


def socket_dir(run_dir: Path, branch_id: str) -> Path:
    return run_dir / "s" / branch_id

# WAL archiving and point-in-time recovery (agent/archive.py, docs/durability.md).
P_ARCHIVE = "cygnet:archive"  # on databases and branches: on | off (unset: main on, others off)
P_WAL_GEN = "cygnet:wal-gen"  # on branches: the archive generation (a rewind starts a new one)
P_FORK = "cygnet:fork"  # on branches: PARENT_GEN:wal point of the branch point (wal/points.py)
P_WAL_POINT = "cygnet:wal-point"  # on snapshots: the WAL it holds ends in LOW-HIGH@TIME
USER_PROPS += (P_ARCHIVE, P_WAL_GEN, P_FORK, P_WAL_POINT)

# Masked copies and their snapshots (agent/masked_goldens.py), read from the catalog.
P_MASKED = "cygnet:masked"  # "1" on a masked snapshot
P_MASKED_LSN = "cygnet:masked-lsn"  # where the masked snapshot's fresh WAL starts
P_MASK_OF = "cygnet:masked-of"  # the branch id the copy masks
P_MASK_RULES = "cygnet:masked-rules"  # sha256 of the rules it was masked with
USER_PROPS += (P_MASKED, P_MASKED_LSN, P_MASK_OF, P_MASK_RULES)
