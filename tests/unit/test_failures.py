"""ZFS errors become domain errors that speak of databases, branches and snapshots."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from cygnet import errors
from cygnet.agent.failures import Translator
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.zfs import errors as zfs

DB, BR, SN = "db0123456789", "br0123456789", "sn0123456789"


def translator() -> Translator:
    db = DatabaseRecord(DB, "shop", f"tank/cygnet/db/{DB}", "tank", "15", "nano", "ready", 0.0,
                        "")
    db.branches[BR] = BranchRecord(BR, "dev", DB, "brmain000000", f"tank/cygnet/db/{DB}/{BR}",
                                   None, 5432, "running", "ready", 0.0, "", 0, 0)
    # Only the cache of known databases is read: a namespace stands in for the Host.
    return Translator(cast(Host, SimpleNamespace(known={DB: db})))


@pytest.mark.parametrize(("exc", "cls", "text"), [
    (zfs.DatasetNotFound(f"cannot open 'tank/cygnet/db/{DB}/{BR}@{SN}': dataset does not "
                         "exist", argv=["zfs", "destroy", f"tank/cygnet/db/{DB}/{BR}@{SN}"]),
     errors.NotFound, f"snapshot {SN} of branch shop/dev no longer exists"),
    (zfs.HasDependents("cannot destroy: has dependent clones",
                       argv=["zfs", "destroy", f"tank/cygnet/db/{DB}/{BR}-a1b2c3"]),
     errors.FailedPrecondition, "branch shop/dev has dependent"),
    (zfs.DatasetBusy("busy", argv=["zfs", "destroy", f"tank/cygnet/db/{DB}"]),
     errors.Aborted, "database 'shop' is busy"),
    (zfs.OutOfSpace("out of space", argv=["zfs", "snapshot", f"tank/cygnet/db/{DB}/{BR}@x"]),
     errors.ResourceExhausted, "pool tank is full"),
    (zfs.ZfsTimeout("timed out", argv=["zfs", "destroy", f"tank/cygnet/db/{DB}/brzzzzzzzzzz"]),
     errors.Aborted, "branch shop/brzzzzzzzzzz"),
])
def test_expected_zfs_errors_name_objects_not_datasets(exc: zfs.ZfsError, cls: type,
                                                       text: str) -> None:
    out = translator()(exc)
    assert isinstance(out, cls) and text in str(out)
    assert "tank/cygnet" not in str(out)


def test_anything_else_is_left_for_the_interceptor_to_call_internal() -> None:
    odd = zfs.ZfsError("internal error: Bad file descriptor", argv=["zfs", "list"])
    assert translator()(odd) is odd
    plain = errors.NotFound("x")
    assert translator()(plain) is plain


def test_templates_are_named_as_such() -> None:
    busy = zfs.DatasetBusy("cannot mount 'tank/cygnet/templates/pg15': busy",
                           argv=["zfs", "create", "tank/cygnet/templates/pg15"])
    out = translator()(busy)
    assert isinstance(out, errors.Aborted) and "PostgreSQL 15 template is busy" in str(out)
