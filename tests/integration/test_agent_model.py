"""Random sequences of create, branch, write, reset and delete, checked against a model.

The model is what a user expects: a branch starts with exactly the rows its
parent had, sees only its own writes, and a reset brings back the parent's
current rows.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import grpc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc
from tests.conftest import unique
from tests.harness import Daemon, query

pytestmark = pytest.mark.integration

_counter = itertools.count()


@dataclass
class ModelBranch:
    parent: str | None
    rows: set[str] = field(default_factory=set)
    uri: pb.Connection | None = None


class BranchingMachine(RuleBasedStateMachine):
    daemon: Daemon

    def __init__(self) -> None:
        super().__init__()
        self.dbs: dict[str, dict[str, ModelBranch]] = {}
        self.channel = self.daemon.channel()
        self.stub = agent_pb2_grpc.AgentStub(self.channel)  # type: ignore[no-untyped-call]

    def teardown(self) -> None:
        for name in list(self.dbs):
            self.stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)
        self.channel.close()

    def _conn(self, db: str, branch: str) -> pb.Connection:
        ref = pb.BranchRef(database=db, name=branch)
        conn: pb.Connection = self.stub.GetConnection(pb.GetConnectionRequest(branch=ref))
        return conn

    def _children(self, db: str, branch: str) -> list[str]:
        return [n for n, b in self.dbs[db].items() if b.parent == branch]

    def _subtree(self, db: str, branch: str) -> list[str]:
        out = [branch]
        for child in self._children(db, branch):
            out += self._subtree(db, child)
        return out

    @precondition(lambda self: len(self.dbs) < 2)
    @rule()
    def create_db(self) -> None:
        name = unique("model")
        resp = self.stub.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                                        timeout=120)
        query(resp.connection, "create table m(v text)")
        self.dbs[name] = {"main": ModelBranch(None)}

    @precondition(lambda self: self.dbs)
    @rule(data=st.data())
    def branch(self, data: st.DataObject) -> None:
        db = data.draw(st.sampled_from(sorted(self.dbs)))
        if len(self.dbs[db]) >= 5:
            return
        parent = data.draw(st.sampled_from(sorted(self.dbs[db])))
        name = f"b{next(_counter)}"
        self.stub.CreateBranch(pb.CreateBranchRequest(database=db, name=name, parent=parent),
                               timeout=60)
        self.dbs[db][name] = ModelBranch(parent, set(self.dbs[db][parent].rows))

    @precondition(lambda self: self.dbs)
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        db = data.draw(st.sampled_from(sorted(self.dbs)))
        branch = data.draw(st.sampled_from(sorted(self.dbs[db])))
        marker = f"{branch}-{next(_counter)}"
        query(self._conn(db, branch), f"insert into m values ('{marker}')")
        self.dbs[db][branch].rows.add(marker)

    @precondition(lambda self: any(len(b) > 1 for b in self.dbs.values()))
    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        db = data.draw(st.sampled_from(sorted(d for d in self.dbs if len(self.dbs[d]) > 1)))
        branch = data.draw(st.sampled_from(sorted(n for n in self.dbs[db] if n != "main")))
        ref = pb.BranchRef(database=db, name=branch)
        if self._children(db, branch):
            with pytest.raises(grpc.RpcError) as err:
                self.stub.ResetBranch(pb.ResetBranchRequest(branch=ref), timeout=60)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            return
        self.stub.ResetBranch(pb.ResetBranchRequest(branch=ref), timeout=60)
        parent = self.dbs[db][branch].parent
        assert parent is not None
        self.dbs[db][branch].rows = set(self.dbs[db][parent].rows)

    @precondition(lambda self: any(len(b) > 1 for b in self.dbs.values()))
    @rule(data=st.data(), cascade=st.booleans())
    def delete_branch(self, data: st.DataObject, cascade: bool) -> None:
        db = data.draw(st.sampled_from(sorted(d for d in self.dbs if len(self.dbs[d]) > 1)))
        branch = data.draw(st.sampled_from(sorted(n for n in self.dbs[db] if n != "main")))
        req = pb.DeleteBranchRequest(branch=pb.BranchRef(database=db, name=branch),
                                     cascade=cascade)
        if self._children(db, branch) and not cascade:
            with pytest.raises(grpc.RpcError) as err:
                self.stub.DeleteBranch(req, timeout=60)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            return
        self.stub.DeleteBranch(req, timeout=60)
        for name in self._subtree(db, branch):
            del self.dbs[db][name]

    @precondition(lambda self: self.dbs)
    @rule(data=st.data())
    def delete_db(self, data: st.DataObject) -> None:
        db = data.draw(st.sampled_from(sorted(self.dbs)))
        self.stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=db), timeout=120)
        del self.dbs[db]

    @precondition(lambda self: self.dbs)
    @rule(data=st.data())
    def check_rows(self, data: st.DataObject) -> None:
        db = data.draw(st.sampled_from(sorted(self.dbs)))
        for branch, model in self.dbs[db].items():
            rows = {r[0] for r in query(self._conn(db, branch), "select v from m")}
            assert rows == model.rows, (db, branch)

    @invariant()
    def check_lineage(self) -> None:
        for db, branches in self.dbs.items():
            listed = self.stub.ListBranches(pb.ListBranchesRequest(database=db)).branches
            got = {b.name: (b.parent_branch_name or None) for b in listed}
            assert got == {n: b.parent for n, b in branches.items()}
            assert all(b.state == pb.BRANCH_STATE_RUNNING for b in listed)


def test_random_operations_match_the_model(daemon: Daemon) -> None:
    BranchingMachine.daemon = daemon
    run_state_machine_as_test(BranchingMachine, settings=settings(
        max_examples=5, stateful_step_count=12, deadline=None,
        suppress_health_check=list(HealthCheck)))
