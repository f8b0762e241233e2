"""DedupIndex against a dict model (hypothesis state machine) and edge cases."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cygnet.blocks import RECORD_SIZE, BlockLocation, DedupIndex, iter_records

# Near-identical keys (few heads, short random tails) make repeats likely.
digests = st.builds(
    lambda head, tail: bytes([head]) * 15 + tail,
    st.integers(0, 3),
    st.binary(min_size=1, max_size=1),
)
u64 = st.integers(0, 2**64 - 1)
locations = st.tuples(u64, u64, st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1))


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = DedupIndex()
        self.model: dict[bytes, tuple[int, int, int, int]] = {}

    @rule(digest=digests, loc=locations)
    def insert(self, digest: bytes, loc: tuple[int, int, int, int]) -> None:
        new = self.index.insert(digest, *loc)
        assert new == (digest not in self.model)
        self.model.setdefault(digest, loc)

    @rule(digest=digests)
    def remove(self, digest: bytes) -> None:
        assert self.index.remove(digest) == (digest in self.model)
        self.model.pop(digest, None)

    @rule(digest=digests)
    def lookup(self, digest: bytes) -> None:
        assert (digest in self.index) == (digest in self.model)
        assert self.index.get(digest) == self.model.get(digest)
        assert self.index.get(digest, "x") == self.model.get(digest, "x")

    @rule(probe=st.lists(digests, max_size=10))
    def missing(self, probe: list[bytes]) -> None:
        expected = [i for i, d in enumerate(probe) if d not in self.model]
        assert self.index.missing(b"".join(probe)) == expected

    @rule()
    def round_trip(self) -> None:
        self.index = DedupIndex.from_bytes(self.index.to_bytes())

    @invariant()
    def same_contents(self) -> None:
        assert len(self.index) == len(self.model)
        records = self.index.to_bytes()
        assert len(records) == RECORD_SIZE * len(self.model)
        assert {d: tuple(loc) for d, loc in iter_records(records)} == self.model


TestIndexMachine = IndexMachine.TestCase
TestIndexMachine.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


def test_many_entries_grow_and_persist() -> None:
    index = DedupIndex(capacity=10)
    keys = [i.to_bytes(16, "big") for i in range(50_000)]
    for i, key in enumerate(keys):
        assert (
            index.insert(key, i, i * 2, i % 7, i % 3)
            if i % 2
            else index.insert(key, i, i * 2, i % 7)
        )
    assert len(index) == 50_000
    assert index.get(keys[123]) == (123, 246, 4, 0)
    assert index.get(keys[124]) == (124, 248, 5, 0)
    assert index.get(keys[125]) == (125, 250, 6, 2)
    copy = DedupIndex()
    assert copy.update(index.to_bytes()) == 50_000
    assert copy.update(index.to_bytes()) == 0
    assert all(k in copy for k in keys[::997])
    assert BlockLocation(*copy.get(keys[5], (0, 0, 0))) == BlockLocation(5, 10, 5, 2)


def test_bad_arguments() -> None:
    index = DedupIndex()
    with pytest.raises(ValueError):
        index.insert(b"short", 1, 2, 3)
    with pytest.raises(ValueError):
        b"x" * 15 in index  # noqa: B015
    with pytest.raises(OverflowError):
        index.insert(b"x" * 16, 1, 2, 2**32)
    with pytest.raises(OverflowError):
        index.insert(b"x" * 16, -1, 2, 3)
    with pytest.raises(OverflowError):
        index.insert(b"x" * 16, 1, 2, 3, 2**16)
    with pytest.raises(ValueError, match="slot"):
        index.update(b"x" * 36 + (2**16).to_bytes(4, "little"))
    with pytest.raises(ValueError):
        index.update(b"x" * (RECORD_SIZE + 1))
    with pytest.raises(ValueError):
        index.missing(b"x" * 17)
    with pytest.raises(ValueError):
        DedupIndex(capacity=-1)
    assert len(index) == 0


def test_insert_frame_indexes_new_blocks_by_slot() -> None:
    index = DedupIndex()
    a, b, c = (bytes([n]) * 16 for n in (1, 2, 3))
    index.insert(b, 9, 9, 9)
    records = index.insert_frame(a + b + c + a, 7, 100, 50)  # b stored, a repeated
    assert [(d, tuple(loc)) for d, loc in iter_records(records)] == [
        (a, (7, 100, 50, 0)),
        (c, (7, 100, 50, 2)),
    ]
    assert index.get(a) == (7, 100, 50, 0)
    assert index.get(b) == (9, 9, 9, 0)
    assert index.insert_frame(a + c, 1, 2, 3) == b""
    with pytest.raises(ValueError, match="digests"):
        index.insert_frame(b"x" * 17, 1, 2, 3)


def test_insert_frame_out_of_memory_indexes_nothing() -> None:
    """Each allocation of the call fails in turn (CPython's _testcapi hooks):
    a frame is indexed whole or not at all, never blocks without records."""
    _testcapi = pytest.importorskip("_testcapi")
    frame = b"".join(bytes([200 + k]) * 16 for k in range(8))
    failures = 0
    for nth in range(8):
        index = DedupIndex()
        for i in range(10):  # 10 of 16 slots: the frame's 2nd new block needs 32
            index.insert(i.to_bytes(16, "big"), 1, 0, 0)
        records = None
        _testcapi.set_nomemory(nth, 0)
        try:
            records = index.insert_frame(frame, 7, 0, 100)
        except MemoryError:
            failures += 1
        finally:
            _testcapi.remove_mem_hooks()
        added = len(records) // RECORD_SIZE if records is not None else 0
        assert len(index) == 10 + added
        assert index.missing(frame) == ([] if records is not None else list(range(8)))
    assert failures > 0
