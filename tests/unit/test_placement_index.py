"""The leader's in-memory index picks what scoring.choose picks by scanning every host."""

from __future__ import annotations

import random

import pytest

from cygnet.coordinator import scoring
from cygnet.coordinator.index import IndexedHost, PlacementIndex
from cygnet.coordinator.models import GB_UNIT, Constraints, Demand
from cygnet.errors import InvalidArgument, ResourceExhausted

SIZES = ["nano", "small", "medium", "large"]


def fleet(rng: random.Random, n: int) -> PlacementIndex:
    index = PlacementIndex()
    for i in range(n):
        memory = rng.choice([8, 16, 64]) * GB_UNIT
        size = rng.choice([1, 2]) * 1024 * GB_UNIT
        index.put(IndexedHost(f"h{i:03d}", f"10.0.0.{i}:7433", f"z{i % 3}",
                              ("15", "16") if i % 2 else ("15",), {"rack": f"r{i % 4}"},
                              memory, 0, 0, rng.randrange(3), rng.choice([10, 40]),
                              int(size * rng.uniform(0.5, 0.9)), size, 0, True, i % 17 == 0))
    return index


def expected(index: PlacementIndex, d: Demand, version: str, c: Constraints,
             excluded: set[str]) -> scoring.Choice:
    hosts = [h for h in index.hosts.values() if h.placeable
             and (not c.zone or h.zone == c.zone) and (not version or version in h.versions)
             and all(h.labels.get(k) == v for k, v in c.labels.items())]
    return scoring.choose([h.candidate() for h in hosts], d, Constraints(), excluded)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_index_matches_a_full_scan(seed: int) -> None:
    rng = random.Random(seed)
    index = fleet(rng, 60)
    for step in range(400):
        d = Demand.for_size(rng.choice(SIZES))
        c = Constraints(zone=rng.choice(["", "z1"]),
                        labels=rng.choice([{}, {}, {"rack": "r2"}]),
                        anti_affinity_group=rng.choice(["", "", "g1"]))
        version = rng.choice(["", "15", "16"])
        excluded = index._excluded(c)
        try:
            want = expected(index, d, version, c, excluded)
        except ResourceExhausted:
            with pytest.raises(ResourceExhausted):
                index.choose(d, version, c, set())
            continue
        got = index.choose(d, version, c, set())
        assert (got.host_id, round(got.score, 9)) == (want.host_id, round(want.score, 9)), step
        index.adjust(got.host_id, d, +1, c.anti_affinity_group)
        if step % 50 == 0:  # a host leaves and comes back, as with heartbeats
            index.set_state(got.host_id, available=False)


def test_requests_no_host_could_serve_name_the_field() -> None:
    index = fleet(random.Random(4), 10)
    nano = Demand.for_size("nano")
    for version, c, field in [("14", Constraints(), "postgres_version"),
                              ("", Constraints(zone="mars"), "constraints.zone")]:
        with pytest.raises(InvalidArgument) as err:
            index.choose(nano, version, c, set())
        assert err.value.field == field
    huge = Demand("large", 1 << 50, 1)
    with pytest.raises(InvalidArgument) as err:
        index.choose(huge, "", Constraints(), set())
    assert err.value.field == "size_class"


def test_eligible_counts_available_undrained_hosts() -> None:
    index = fleet(random.Random(5), 6)  # h000 is drained (i % 17 == 0)
    nano = Demand.for_size("nano")
    assert index.choose(nano, "", Constraints(), set()).eligible == 5
    index.set_state("h001", drained=True)
    index.set_state("h002", available=False)
    assert index.choose(nano, "", Constraints(), set()).eligible == 3
    index.set_state("h001", drained=False)
    assert index.choose(nano, "", Constraints(), set()).eligible == 4
