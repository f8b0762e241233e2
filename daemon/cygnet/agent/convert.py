"""Domain records to protobuf messages, and requests to domain arguments."""

from __future__ import annotations

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from cygnet.agent import lifetime
from cygnet.agent.clusters import Connection
from cygnet.agent.expiry import Children, children_index
from cygnet.agent.host import HostStatus, PoolView
from cygnet.agent.inventory import DatabaseRecord, SnapshotRecord
from cygnet.agent.pgsettings import ConfigView, ExtensionView
from cygnet.agent.service import BranchRef, BranchView
from cygnet.agent.upgrade import UpgradeReport
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.rpc.convert import timestamp
from cygnet.states import BranchState, Desired

# By member name: BranchState.RUNNING -> BRANCH_STATE_RUNNING (tests/unit/test_states.py).
STATES: dict[str, pb.BranchState.ValueType] = {
    state: pb.BranchState.Value(f"BRANCH_STATE_{state.name}") for state in BranchState}


def branch_ref(msg: pb.BranchRef, field: str = "branch") -> BranchRef:
    return BranchRef(msg.branch_id, msg.database, msg.name, field)


def database(db: DatabaseRecord) -> pb.Database:
    main = db.main
    return pb.Database(
        id=db.id, name=db.name, postgres_version=db.version, size_class=db.size_class,
        pool=db.pool, main_branch_id=main.id if main else "", created_at=timestamp(db.created),
        branch_count=len(db.branches), quota_bytes=db.quota_bytes,
    )


def branch(view: BranchView, kids: Children | None = None) -> pb.Branch:
    """`kids` (expiry.children_index of the view's database), when given, spares a
    scan of the database's branches: a listing makes it once for all."""
    if kids is None:
        kids = children_index(view.database)
    msg = _record_part(view, kids)
    _set_live_part(msg, view, kids)
    return msg


def _record_part(view: BranchView, kids: Children) -> pb.Branch:
    """What comes from the records alone: fixed for as long as they are."""
    b, db = view.record, view.database
    parent = view.parent
    return pb.Branch(
        id=b.id, name=b.name, database_id=db.id, database_name=db.name,
        parent_branch_id=b.parent_id, parent_branch_name=parent.name if parent else "",
        origin_snapshot=view.origin_name, desired_running=b.desired == Desired.RUNNING,
        used_bytes=b.used_bytes, logical_bytes=b.logical_bytes, port=b.port,
        created_at=timestamp(b.created), postgres_version=db.version_of(b),
        size_class=db.size_class, child_branch_ids=[c.id for c in kids.get(b.id, ())])


def _set_live_part(msg: pb.Branch, view: BranchView, kids: Children) -> None:
    """The state, the idle timeout, and expiry and protection (which depend on the time)."""
    msg.state = STATES.get(view.state, pb.BRANCH_STATE_UNSPECIFIED)
    msg.state_message = view.message
    msg.suspend_after.SetInParent()
    msg.suspend_after.seconds = int(view.suspend_after)
    for key, value in lifetime.branch_fields(view, kids).items():
        if key == "protected":
            msg.protected = value
        else:
            getattr(msg, key).CopyFrom(value)


def fill_branches(out: RepeatedCompositeFieldContainer[pb.Branch], views: list[BranchView], *,
                  shared: bool = False) -> None:
    """A listing's messages, into `out`: each database's children index is made once.
    `shared`: the views' records are a build no caller changes (Host.shared_inventory),
    so the part of each message that comes from them is kept with the build and
    copied, not made again (most of a listing's time at 1,000 branches)."""
    indexes: dict[int, Children] = {}
    for view in views:
        db = view.database
        kids = indexes.get(id(db))
        if kids is None:
            kids = indexes[id(db)] = children_index(db)
        kept = db.derived.setdefault("branch_messages", {}) if shared else {}
        part = kept.get(view.record.id)
        if part is None:
            part = kept[view.record.id] = _record_part(view, kids)
        msg = out.add()
        msg.CopyFrom(part)
        _set_live_part(msg, view, kids)


def snapshot(snap: SnapshotRecord, branch_ids_by_dataset: dict[str, str]) -> pb.Snapshot:
    return pb.Snapshot(
        id=snap.id, name=snap.name, branch_id=snap.branch_id, created_at=timestamp(snap.created),
        used_bytes=snap.used_bytes,
        dependent_branch_ids=[branch_ids_by_dataset.get(c, c) for c in snap.clones],
    )


def connection(conn: Connection) -> pb.Connection:
    return pb.Connection(host=conn.host, port=conn.port, user=conn.user, password=conn.password,
                         dbname=conn.dbname, uri=conn.uri, socket_dir=str(conn.socket_dir),
                         sslmode=conn.sslmode,
                         sslrootcert=str(conn.sslrootcert) if conn.sslrootcert else "")


def pool(view: PoolView) -> pb.Pool:
    p = view.status
    return pb.Pool(name=p.name, size_bytes=p.size_bytes, free_bytes=p.free_bytes,
                   used_bytes=p.used_bytes, health=p.health, reserve_bytes=view.reserve_bytes)


def host_status(status: HostStatus) -> pb.HostStatus:
    return pb.HostStatus(
        host_id=status.host_id, hostname=status.hostname, version=status.version,
        pools=[pool(p) for p in status.pools], running_clusters=status.running_clusters,
        postgres_versions=status.postgres_versions, database_count=status.database_count,
        branch_count=status.branch_count, zfs_dialect=status.zfs_dialect)


def branch_config(view: ConfigView) -> pb.BranchConfig:
    return pb.BranchConfig(
        branch_id=view.branch_id, pending_restart=view.pending_restart, restarted=view.restarted,
        settings=[pb.BranchSetting(name=s.name, value=s.value, current=s.current,
                                   pending_restart=s.pending_restart, context=s.context)
                  for s in view.settings])


def extension(ext: ExtensionView) -> pb.Extension:
    return pb.Extension(name=ext.name, default_version=ext.default_version,
                        installed_version=ext.installed_version, comment=ext.comment)


def upgrade(report: UpgradeReport) -> pb.UpgradeReport:
    return pb.UpgradeReport(
        from_version=report.from_version, to_version=report.to_version, seconds=report.seconds,
        checks=report.checks, missing_extensions=report.missing_extensions,
        old_system_identifier=report.old_system_identifier,
        new_system_identifier=report.new_system_identifier)
