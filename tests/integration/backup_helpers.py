"""Helpers of the backup tests: a daemon of their own, stream calls, table checksums."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypedDict, Unpack

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from cygnet.api.v1 import backup_pb2_grpc as bpb_grpc
from tests.harness import Daemon, private_daemon, query


@pytest.fixture(scope="module")
def bdaemon() -> Iterator[Daemon]:
    with private_daemon("b", 59500, "4G") as d:
        yield d


def backups(d: Daemon) -> Any:
    return bpb_grpc.BackupsStub(d.channel())  # type: ignore[no-untyped-call]


def run_stream(events: Any) -> tuple[list[bpb.Progress], Any]:
    """Progress events and the final result of a streaming call."""
    progress, results = [], []
    for event in events:
        if event.HasField("progress"):
            progress.append(event.progress)
        else:
            results.append(event.result)
    assert len(results) == 1
    return progress, results[0]


def create_backup(d: Daemon, ref: pb.BranchRef) -> bpb.Backup:
    _, result = run_stream(backups(d).CreateBackup(bpb.CreateBackupRequest(branch=ref),
                                                   timeout=300))
    return result  # type: ignore[no-any-return]


class RestoreTarget(TypedDict, total=False):
    """RestoreBackupRequest's fields besides the backup's id: where the restore goes."""
    branch_name: str
    database_name: str
    pool: str
    remote: bool
    request_id: str


class RestoreFields(RestoreTarget, total=False):
    """All of RestoreBackupRequest's fields."""
    backup_id: str


def restore(d: Daemon, backup_id: str, **target: Unpack[RestoreTarget]
            ) -> bpb.RestoreBackupResponse:
    req = bpb.RestoreBackupRequest(backup_id=backup_id, **target)
    _, result = run_stream(backups(d).RestoreBackup(req, timeout=300))
    return result  # type: ignore[no-any-return]


def verify(d: Daemon) -> bpb.VerifyReport:
    _, report = run_stream(backups(d).VerifyBackups(bpb.VerifyBackupsRequest(), timeout=300))
    return report  # type: ignore[no-any-return]


def checksums(conn: pb.Connection, tables: list[str]) -> dict[str, str]:
    """md5 of each table's rows in a fixed order: equal data, equal sums."""
    sums = {}
    for table in tables:
        (row,) = query(conn, f"select md5(string_agg(t::text, ',' order by t.id)) from {table} t")
        sums[table] = str(row[0])
    return sums


def fill(conn: pb.Connection, table: str, rows: int) -> None:
    query(conn, f"create table {table} (id int primary key, v text);"
                f"insert into {table} select g, md5(g::text) || repeat('x', 40)"
                f" from generate_series(1, {rows}) g")


def rpc_error(call: Any) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


def temp_datasets(d: Daemon) -> list[str]:
    return [n for n in d.pool.datasets() if "/cygnet/tmp/" in n or "@tm" in n]
