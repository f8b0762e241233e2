"""Domain records to protobuf messages, and requests to domain arguments."""

from __future__ import annotations

from cygnet.agent.clusters import Connection
from cygnet.agent.inventory import DatabaseRecord, SnapshotRecord
from cygnet.agent.service import BranchRef, BranchView
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.rpc.convert import timestamp

STATES: dict[str, pb.BranchState.ValueType] = {
    "creating": pb.BRANCH_STATE_CREATING,
    "starting": pb.BRANCH_STATE_STARTING,
    "running": pb.BRANCH_STATE_RUNNING,
    "stopped": pb.BRANCH_STATE_STOPPED,
    "failed": pb.BRANCH_STATE_FAILED,
    "resetting": pb.BRANCH_STATE_RESETTING,
    "deleting": pb.BRANCH_STATE_DELETING,
}


def branch_ref(msg: pb.BranchRef) -> BranchRef:
    return BranchRef(msg.branch_id, msg.database, msg.name)


def database(db: DatabaseRecord) -> pb.Database:
    main = db.main
    return pb.Database(
        id=db.id, name=db.name, postgres_version=db.version, size_class=db.size_class,
        pool=db.pool, main_branch_id=main.id if main else "", created_at=timestamp(db.created),
        branch_count=len(db.branches),
    )


def branch(view: BranchView) -> pb.Branch:
    b, db = view.record, view.database
    parent = view.parent
    return pb.Branch(
        id=b.id, name=b.name, database_id=db.id, database_name=db.name,
        parent_branch_id=b.parent_id, parent_branch_name=parent.name if parent else "",
        origin_snapshot=view.origin_name, state=STATES.get(view.state, pb.BRANCH_STATE_UNSPECIFIED),
        desired_running=b.desired == "running", used_bytes=b.used_bytes,
        logical_bytes=b.logical_bytes, port=b.port, created_at=timestamp(b.created),
        postgres_version=db.version, size_class=db.size_class,
        child_branch_ids=[c.id for c in db.children(b.id)],
    )


def snapshot(snap: SnapshotRecord, branch_ids_by_dataset: dict[str, str]) -> pb.Snapshot:
    return pb.Snapshot(
        id=snap.id, name=snap.name, branch_id=snap.branch_id, created_at=timestamp(snap.created),
        used_bytes=snap.used_bytes,
        dependent_branch_ids=[branch_ids_by_dataset.get(c, c) for c in snap.clones],
    )


def connection(conn: Connection) -> pb.Connection:
    return pb.Connection(host=conn.host, port=conn.port, user=conn.user, password=conn.password,
                         dbname=conn.dbname, uri=conn.uri, socket_dir=str(conn.socket_dir))
