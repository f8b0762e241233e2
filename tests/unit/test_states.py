"""One set of state names: the wire enum, the CLI, the metrics and the phases agree."""

from __future__ import annotations

from cygnet.agent import convert
from cygnet.agent import layout as L
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli.output import STATE_STYLES
from cygnet.cli.shapes import state_name
from cygnet.metrics.agent import STATES as METRIC_STATES
from cygnet.states import BranchState, Desired, Phase, state_of_phase


def test_every_wire_state_has_a_branch_state_and_back() -> None:
    wire = {v for v in pb.BranchState.values() if v != pb.BRANCH_STATE_UNSPECIFIED}
    assert set(convert.STATES.values()) == wire
    for state, value in convert.STATES.items():
        assert state_name(value) == state  # what the CLI prints is the domain's string


def test_the_cli_and_the_metrics_know_every_state() -> None:
    assert set(STATE_STYLES) == set(BranchState)
    assert tuple(BranchState) == METRIC_STATES


def test_phases_are_stored_as_their_strings_and_show_as_states() -> None:
    assert (L.PHASE_CREATING, L.PHASE_READY, L.PHASE_RESETTING, L.PHASE_DELETING) == (
        "creating", "ready", "resetting", "deleting")
    assert f"{L.P_PHASE}={Phase.DELETING}" == "cygnet:phase=deleting"
    for phase in Phase:
        if phase != Phase.READY:
            assert state_of_phase(phase) == BranchState(phase.value)
    assert state_of_phase("migrating") == BranchState.FAILED  # from a newer version
    assert [str(d) for d in Desired] == ["running", "stopped", "suspended"]
