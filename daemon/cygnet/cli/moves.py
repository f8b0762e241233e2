"""Moving databases between hosts from the CLI: `cygnet db move` and `hosts drain --evacuate`.

Both call the coordinator's MoveDatabase, a stream of progress messages
(docs/ha.md, "Moving databases"); a person watching sees one line per step
and the bytes of each round, scripts get JSON at the end.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.cli import output
from cygnet.cli.errors import CliError, Exit
from cygnet.cli.fleet import Coordinator, grpc_module

# A move sends the whole lineage: hours for a large database.
LONG_TIMEOUT = 24 * 3600.0


def _line(p: apb.MoveProgress) -> str:
    size = f" {output.size(p.sent_bytes)}" if p.sent_bytes else ""
    total = f" of {output.size(p.total_bytes)}" if p.total_bytes and p.sent_bytes else ""
    return f"{p.phase}{size}{total}{': ' + p.message if p.message else ''}"


def move(client: Coordinator, database: str, to_host: str, *, show: bool) -> dict[str, Any]:
    """Runs one move to its end; returns its summary (raises CliError if it failed)."""
    from cygnet.cli.rpcerrors import from_rpc

    grpc = grpc_module()
    if client.timeout < LONG_TIMEOUT:
        client.timeout = LONG_TIMEOUT
    summary: dict[str, Any] = {"database": database, "from_host": "", "to_host": to_host,
                               "moved_bytes": 0, "downtime_seconds": None, "moved": False}
    try:
        stream = client.stub.MoveDatabase(cpb.MoveDatabaseRequest(
            database=database, to_host=to_host), timeout=client.timeout,
            metadata=client.metadata)
        for p in stream:
            summary["database_id"] = p.database_id
            summary["moved_bytes"] = max(summary["moved_bytes"], p.moved_bytes)
            if p.phase == "prepare":
                summary["to_host"] = p.host_id
            if p.phase == "cleanup":
                summary["from_host"] = p.host_id
            if p.HasField("downtime"):
                summary["downtime_seconds"] = round(p.downtime.ToTimedelta().total_seconds(), 3)
            if p.phase == "moved":
                summary["moved"] = True
            if show:
                click.echo(f"{database}: {_line(p)}", err=True)
    except grpc.RpcError as exc:
        raise from_rpc(exc, f"coordinator {client.address}", True) from exc
    if not summary["moved"]:
        raise CliError(f"{database}: the move ended without finishing", Exit.ERROR)
    return summary


def evacuate(client: Coordinator, host_id: str, concurrency: int, *, show: bool
             ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Moves every database off `host_id` (placement picks each target), `concurrency`
    at a time; returns what moved and what did not, with why."""
    found = client.call("ListDatabases", apb.ListDatabasesRequest()).databases
    names = sorted(d.database.name or d.database.id for d in found if d.host_id == host_id)

    def one(name: str) -> dict[str, Any] | dict[str, str]:
        try:
            return move(client, name, "", show=show)
        except CliError as exc:
            return {"database": name, "error": exc.message}

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(one, names))
    moved = [r for r in results if "error" not in r]
    failed = [{"database": str(r["database"]), "error": str(r["error"])}
              for r in results if "error" in r]
    return moved, failed
