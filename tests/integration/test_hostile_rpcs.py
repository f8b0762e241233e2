"""Hostile values in every string and integer field of every RPC, from the proto descriptors.

A daemon of its own (destructive calls cannot touch other tests' data) gets,
for each method of every service cygnetd serves (taken from the descriptors, and
checked against the daemon's own reflection), requests built from a base
(empty, or valid references to real objects) with one field replaced by a
hostile value: empty, huge, control characters, NUL, invalid UTF-8, '../',
id-shaped strings, unicode, negative and huge integers (sent on the wire as
other clients would). Every answer must be a deliberate status: never
UNKNOWN, INTERNAL or UNAVAILABLE, never a dataset name, never an echo of a
huge value; and the daemon's log must hold no traceback. The catch-all still
maps surprises to INTERNAL (tests/unit/test_requests.py); this proves hostile
input never reaches it.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from cygnet.api.v1 import backup_pb2_grpc as bpb_grpc
from cygnet.api.v1 import schema_pb2 as spb
from cygnet.rpc import descriptors
from tests.harness import Daemon, private_daemon

pytestmark = pytest.mark.integration

# Every API service but the coordinator's (another daemon): the reflection test below
# proves this is exactly what cygnetd serves.
SERVICES = [s for s in descriptors.services() if s.name != "Coordinator"]
METHODS = [(s, m) for s in SERVICES for m in s.methods]
EXAMPLES = 12  # per method: bounded, so the whole file stays within seconds
CALL_TIMEOUT = 60.0
REFUSED = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
           grpc.StatusCode.DEADLINE_EXCEEDED}

_INTS = (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
         FieldDescriptor.TYPE_UINT64)

HOSTILE_TEXT = st.one_of(
    st.sampled_from([
        "", " ", "\x00", "a\x00b", "\n", "\t x", "../../etc/passwd", "..", ".", "-rf", "main",
        "a/b", "a@b", "x" * 20_000, "é" * 5_000, "\u202egnp.exe", "\U0001f4a5", "\ufeff",
        "db0123456789", "br0123456789", "sn0123456789", "tm0123456789",
        "20261125T211520123456Z-0a1b2c3d", "' or 1=1 --", "%s%n%x", "$(reboot)", "`id`",
        "tank/cygnet/db", "-o mountpoint=/", "\ud800".encode("utf-8", "surrogatepass").decode(
            "utf-8", "replace")]),
    st.text(max_size=70),
    st.from_regex(r"(db|br|sn)[a-z0-9]{10}", fullmatch=True),
)
HOSTILE_BYTES = st.sampled_from([b"\xff\xfe", b"ok\xc0\x80", b"\xed\xa0\x80", b"a" * 70_000])
HOSTILE_INTS = st.sampled_from([0, 1, -1, 7, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1,
                                -(2**63), 2**64 - 1])


@dataclass
class World:
    """Real objects valid base requests point at: `db` for reads, `victim` for changes
    that destroy (DeleteDatabase has one of its own, so the others keep theirs)."""

    daemon: Daemon
    db: str
    victim: str
    doomed: str
    backup_id: str
    log_start: int = 0  # where the daemon's log stood when the probes began


def _create(daemon: Daemon) -> World:
    with daemon.stub() as s, daemon.channel() as ch:
        made = s.CreateDatabase(pb.CreateDatabaseRequest(name="hostile", size_class="nano"),
                                timeout=120)
        s.CreateBranch(pb.CreateBranchRequest(database="hostile", name="kid"), timeout=60)
        main = pb.BranchRef(database="hostile")
        s.CreateSnapshot(pb.CreateSnapshotRequest(branch=main, name="s1"), timeout=60)
        s.CreateDatabase(pb.CreateDatabaseRequest(name="victim", size_class="nano"), timeout=120)
        s.CreateBranch(pb.CreateBranchRequest(database="victim", name="kid"), timeout=60)
        s.CreateSnapshot(pb.CreateSnapshotRequest(branch=pb.BranchRef(database="victim"),
                                                  name="s1"), timeout=60)
        s.CreateDatabase(pb.CreateDatabaseRequest(name="doomed", size_class="nano"), timeout=120)
        events = list(bpb_grpc.BackupsStub(ch).CreateBackup(  # type: ignore[no-untyped-call]
            bpb.CreateBackupRequest(branch=main), timeout=120))
    assert made.database.name == "hostile"
    return World(daemon, "hostile", "victim", "doomed", events[-1].result.id,
                 daemon.log_path.stat().st_size)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with private_daemon("h", 56000, "4G") as daemon:
        yield _create(daemon)


DESTRUCTIVE = {"DeleteDatabase", "DeleteBranch", "DeleteSnapshot", "ResetBranch", "StopBranch",
               "PruneBackups"}


def _valid(world: World, method: str, fd: FieldDescriptor) -> Any:
    """A valid value for a field of a base request, or None to leave it unset."""
    db = world.victim if method in DESTRUCTIVE else world.db
    db = world.doomed if method == "DeleteDatabase" else db
    fresh = "n" + uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "database": db, "parent": "main", "parent_snapshot": "s1", "snapshot": "s1",
        "backup_id": world.backup_id, "request_id": str(uuid.uuid4()), "branch_name": fresh,
        "branch": "main",
        "name": fresh if method.startswith("Create") else "main",
    }
    if fd.message_type is not None and fd.message_type.name == "BranchRef":
        # A merge goes from the child into main; everything else reads main.
        kid = method in DESTRUCTIVE or fd.name == "source"
        return pb.BranchRef(database=db, name="kid" if kid else "main")
    if fd.name == "dry_run":
        return True  # a merge that changes nothing: the probes test input, not merging
    return values.get(fd.name)


def base_request(world: World, method: MethodDescriptor, valid: bool) -> Any:
    cls = _message_class(method)
    request = cls()
    if valid:
        for fd in method.input_type.fields:
            value = _valid(world, method.name, fd)
            if value is None:
                continue
            if fd.message_type is not None:
                getattr(request, fd.name).CopyFrom(value)
            else:
                setattr(request, fd.name, value)
    return request


def _message_class(method: MethodDescriptor) -> Any:
    return message_factory.GetMessageClass(method.input_type)


# Well-known types whose integers a handler turns into times: nested like our own.
_NESTED_WKT = ("google.protobuf.Timestamp", "google.protobuf.Duration")


def field_paths(descriptor: Any, prefix: tuple[FieldDescriptor, ...] = ()
                ) -> list[tuple[FieldDescriptor, ...]]:
    """Every string and integer field, nested messages included."""
    out = []
    for fd in descriptor.fields:
        path = (*prefix, fd)
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type is not None:
            nested = fd.message_type.full_name
            if (nested.startswith("cygnet.") or nested in _NESTED_WKT) and len(prefix) < 2:
                out += field_paths(fd.message_type, path)
        elif fd.type == FieldDescriptor.TYPE_STRING or fd.type in _INTS:
            out.append(path)
    return out


def _varint(value: int) -> bytes:
    value &= 2**64 - 1  # negative numbers travel as 64-bit two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode(path: tuple[FieldDescriptor, ...], value: str | bytes | int) -> bytes:
    """`value` in the field at `path`, as wire bytes to append to a request: the last
    occurrence of a scalar wins, and messages merge, so it replaces that one field."""
    leaf = path[-1]
    if isinstance(value, int):
        data = _varint(leaf.number << 3) + _varint(value)
    else:
        raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        data = _varint(leaf.number << 3 | 2) + _varint(len(raw)) + raw
    for outer in reversed(path[:-1]):
        data = _varint(outer.number << 3 | 2) + _varint(len(data)) + data
    return data


def call(world: World, method: MethodDescriptor, raw: bytes) -> tuple[grpc.StatusCode, str]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    with world.daemon.channel() as ch:
        try:
            if method.server_streaming:
                for _ in ch.unary_stream(path)(raw, timeout=CALL_TIMEOUT):
                    pass
            else:
                ch.unary_unary(path)(raw, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def _hostile(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type in _INTS:
        return HOSTILE_INTS
    return st.one_of(HOSTILE_TEXT, HOSTILE_BYTES)


@pytest.mark.parametrize(("service", "method"), METHODS,
                         ids=[f"{s.name}.{m.name}" for s, m in METHODS])
def test_hostile_values_get_deliberate_answers(world: World, service: Any,
                                               method: MethodDescriptor) -> None:
    paths = field_paths(method.input_type)

    # Reproducible, and different for each method.
    @seed(zlib.crc32(method.full_name.encode()))
    @settings(max_examples=EXAMPLES if paths else 1, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data(), valid=st.booleans())
    def probe(data: st.DataObject, valid: bool) -> None:
        raw = base_request(world, method, valid).SerializeToString()
        if paths:
            path = data.draw(st.sampled_from(paths), label="field")
            value = data.draw(_hostile(path[-1]), label="value")
            raw += encode(path, value)
        check_answer(world, method, raw)

    probe()


def check_answer(world: World, method: MethodDescriptor, raw: bytes) -> grpc.StatusCode:
    code, details = call(world, method, raw)
    assert code not in REFUSED, f"{method.name}: {code.name}: {details[:2000]}"
    assert len(details) < 1100, f"{method.name} echoed {len(details)} characters"
    # What gRPC says when a message overflows its trailers: an echo cut off.
    assert "Stream removed" not in details, f"{method.name}: {details}"
    # The pool's name is random: only a dataset name can carry it.
    dataset = f"{world.daemon.pool.name}/cygnet"
    assert dataset not in details, f"{method.name} named a dataset: {details}"
    return code


# No field of any request accepts these: each must be INVALID_ARGUMENT.
WORST: list[str | bytes | int] = ["x" * 20_000, "a\x00b", b"\xff\xfe"]
WORST_INTS: list[str | bytes | int] = [-1, 2**64 - 1]


@pytest.mark.parametrize(("service", "method"), METHODS,
                         ids=[f"{s.name}.{m.name}" for s, m in METHODS])
def test_the_worst_values_in_every_field(world: World, service: Any,
                                         method: MethodDescriptor) -> None:
    """Each of the nastiest values in each field, beside valid ones: no sampling luck."""
    for path in field_paths(method.input_type):
        values = WORST_INTS if path[-1].type in _INTS else WORST
        for value in values:
            raw = base_request(world, method, True).SerializeToString() + encode(path, value)
            code = check_answer(world, method, raw)
            field = ".".join(fd.name for fd in path)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{method.name} {field}: {code}"


def test_the_probed_services_are_what_cygnetd_serves(world: World) -> None:
    """The list above, derived from the descriptors, against the daemon's reflection."""
    with world.daemon.channel() as ch:
        served = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    ours = {name for name in served if name.startswith("cygnet.")}
    assert ours == {s.full_name for s in SERVICES}
    assert spb.DESCRIPTOR.services_by_name["Schema"].full_name in ours


def _status(world: World, method: str, request: Any, raw: bytes = b"") -> tuple[Any, str]:
    service = bpb.DESCRIPTOR.services_by_name["Backups"]
    return call(world, service.methods_by_name[method], raw or request.SerializeToString())


def test_backup_calls_validate_like_the_others(world: World) -> None:
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    # Empty requests name the field, like GetDatabase.
    for method, request in (("CreateBackup", bpb.CreateBackupRequest()),
                            ("DiffBranches", bpb.DiffBranchesRequest())):
        code, details = _status(world, method, request)
        assert (code, details.split(":")[0]) == (invalid, "branch"), details
    # An unknown database is NOT_FOUND, not an empty OK.
    assert _status(world, "ListBackups", bpb.ListBackupsRequest(database="nosuch"))[0] \
        == not_found
    assert _status(world, "PruneBackups", bpb.PruneBackupsRequest(
        database="nosuch", keep_last=1))[0] == not_found
    code, _ = _status(world, "ListBackups", bpb.ListBackupsRequest(database=world.db))
    assert code == grpc.StatusCode.OK
    # keep_last = -1 as a client sends it: a ten-byte varint, not 2^32-1.
    code, details = _status(world, "PruneBackups", None, b"\x08" + b"\xff" * 9 + b"\x01")
    assert code == invalid and details.startswith("keep_last:"), details


def test_the_daemon_logged_no_traceback(world: World) -> None:
    # Runs after the probes above (file order): what they made the daemon log.
    with world.daemon.log_path.open("rb") as f:
        f.seek(world.log_start)
        log = f.read().decode(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
