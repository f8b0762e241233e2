"""The Backups API's view of the off-host repository: ListBackups(remote=true)."""

from __future__ import annotations

from cygnet.agent import offsite
from cygnet.agent.backups import catalog, convert
from cygnet.api.v1 import backup_pb2 as pb


async def list_backups(database: str, branch: str) -> pb.ListBackupsResponse:
    """Every host's backups in the bucket (of `database` and `branch`, if given),
    oldest first, each naming the host whose prefix holds it."""
    found = await offsite.required().list_remote()
    items = []
    for host, info in found:
        if catalog.matches(info, database, branch):
            item = convert.backup(info)
            item.host = host
            items.append(item)
    return pb.ListBackupsResponse(backups=items)
