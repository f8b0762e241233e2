"""The names of states, defined once: what a branch is doing, the lifecycle phase
stored on a database's or branch's dataset, and whether a branch should run.

StrEnum members are their strings, so they go into ZFS properties, metric
labels and JSON as they are. The wire has its own enum (BranchState in
agent.proto); agent/convert.py maps one to the other by member name.
"""

from __future__ import annotations

from enum import StrEnum


class BranchState(StrEnum):
    """What a branch is doing, as GetBranch, `cygnet branch` and the metrics show it."""

    CREATING = "creating"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    RESETTING = "resetting"
    DELETING = "deleting"
    UNAVAILABLE = "unavailable"  # its data is not mounted (or its dataset is missing)
    SUSPENDING = "suspending"  # being suspended (agent/scale.py); a wake waits for it
    SUSPENDED = "suspended"  # scaled to zero: no postmaster, no port; a client wakes it


class Phase(StrEnum):
    """A database's or branch's lifecycle step (the dataset's cygnet:phase property)."""

    CREATING = "creating"
    READY = "ready"
    RESETTING = "resetting"
    DELETING = "deleting"


class Desired(StrEnum):
    """Whether a branch should run (the dataset's cygnet:desired property)."""

    RUNNING = "running"
    STOPPED = "stopped"  # an operator's stop: keeps its port, never woken by a client
    SUSPENDED = "suspended"  # scaled to zero: holds no port, woken by a client (scale.py)


def state_of_phase(phase: str) -> BranchState:
    """The state a branch shows while its dataset is in `phase` (not READY).

    A phase this version does not know (written by a newer one) shows as failed
    rather than breaking every listing.
    """
    try:
        return BranchState(phase)
    except ValueError:
        return BranchState.FAILED
