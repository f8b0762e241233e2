"""The request table and the status table: complete, and strict where it matters."""

from __future__ import annotations

import grpc
import pytest

from cygnet import errors
from cygnet.api.v1 import agent_pb2, backup_pb2
from cygnet.rpc import errors as rpc_errors
from cygnet.rpc.requests import RULES, VALIDATOR
from cygnet.zfs import errors as zfs_errors

SERVICES = [agent_pb2.DESCRIPTOR.services_by_name["Agent"],
            backup_pb2.DESCRIPTOR.services_by_name["Backups"]]


def test_every_field_of_every_request_has_a_rule() -> None:
    for service in SERVICES:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            assert path in RULES, path
            fields = {f.name for f in method.input_type.fields}
            assert set(RULES[path].fields) == fields, path


def bad_field(method: str, request: object, raw: bytes = b"") -> str:
    with pytest.raises(errors.InvalidArgument) as err:
        VALIDATOR.check(method, request, raw)
    return err.value.field


@pytest.mark.parametrize(("method", "request_", "field"), [
    ("/cygnet.v1.Agent/DeleteDatabase", agent_pb2.DeleteDatabaseRequest(), "database"),
    ("/cygnet.v1.Agent/GetDatabase", agent_pb2.GetDatabaseRequest(), "database"),
    ("/cygnet.v1.Backups/CreateBackup", backup_pb2.CreateBackupRequest(), "branch"),
    ("/cygnet.v1.Backups/DiffBranches", backup_pb2.DiffBranchesRequest(), "branch"),
    ("/cygnet.v1.Backups/DiffBranches", backup_pb2.DiffBranchesRequest(
        branch=agent_pb2.BranchRef(database="d"), other=agent_pb2.BranchRef()), "other"),
    ("/cygnet.v1.Agent/GetBranch", agent_pb2.GetBranchRequest(
        branch=agent_pb2.BranchRef(branch_id="db0123456789")), "branch.branch_id"),
    ("/cygnet.v1.Agent/CreateDatabase", agent_pb2.CreateDatabaseRequest(
        name="db0123456789"), "name"),
    ("/cygnet.v1.Agent/CreateBranch", agent_pb2.CreateBranchRequest(
        database="d", name="br0123456789"), "name"),
    ("/cygnet.v1.Agent/CreateDatabase", agent_pb2.CreateDatabaseRequest(
        name="ok", request_id="a b"), "request_id"),
    ("/cygnet.v1.Backups/RestoreBackup", backup_pb2.RestoreBackupRequest(
        backup_id="20261125T211520123456Z-0a1b2c3d"), "branch_name"),
])
def test_empty_or_malformed_fields_are_named(method: str, request_: object, field: str) -> None:
    assert bad_field(method, request_) == field


def test_a_negative_keep_last_is_refused_not_read_as_two_to_the_32() -> None:
    method = "/cygnet.v1.Backups/PruneBackups"
    # -1 as a client in another language sends it: a ten-byte varint.
    raw = b"\x08" + b"\xff" * 9 + b"\x01"
    request = backup_pb2.PruneBackupsRequest.FromString(raw)
    assert request.keep_last == 2**32 - 1  # what protobuf alone makes of it
    assert bad_field(method, request, raw) == "keep_last"
    big = backup_pb2.PruneBackupsRequest(keep_last=2**32 - 1)
    assert bad_field(method, big, big.SerializeToString()) == "keep_last"
    zero = backup_pb2.PruneBackupsRequest(keep_last=0)
    VALIDATOR.check(method, zero, zero.SerializeToString())


@pytest.mark.parametrize(("exc", "code"), [
    (errors.Aborted("postmaster exited during startup"), grpc.StatusCode.ABORTED),
    (errors.Unavailable("host h2 is down"), grpc.StatusCode.UNAVAILABLE),
    (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
    # Untranslated ZFS errors and surprises are internal: never a dataset name to users.
    (zfs_errors.DatasetNotFound("cannot open 'tank/cygnet/db/dbX/brY@snZ'"),
     grpc.StatusCode.INTERNAL),
    (zfs_errors.DatasetBusy("busy"), grpc.StatusCode.INTERNAL),
    (RuntimeError("boom"), grpc.StatusCode.INTERNAL),
])
def test_status_table(exc: Exception, code: grpc.StatusCode) -> None:
    assert rpc_errors.status_for(exc) == code


def test_internal_errors_show_the_request_id_not_the_detail() -> None:
    exc = zfs_errors.ZfsError("cannot open 'tank/cygnet/db/dbX/brY@snZ'")
    text = rpc_errors._message(exc, grpc.StatusCode.INTERNAL, "req-1")
    assert "req-1" in text and "tank" not in text and "cannot" not in text
    long = rpc_errors._message(errors.NotFound("x" * 50_000), grpc.StatusCode.NOT_FOUND, "r")
    assert len(long) < 1100
