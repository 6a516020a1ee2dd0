"""What a clearance run says it ended with, so that operations staff can find runs by outcome (issue 24, part 2).

A run that got through its steps ends in Prefect's Completed type with a state *name* that is the outcome
("Released", "Refused", ...) and carries one tag ``outcome:<status>``; the runs page filters by that tag (the saved
filters of customs.orchestration.deployments). A run asked to clear a declaration that does not exist, or from a
step that cannot run, ends in Failed type named "Not started": a refusal of the request, with a plain message, not
a failure of the system (the failure automation does not fire for it: Prefect's event is named after the state).

Plain data: the flow, the automations (which must know every name a run can end with) and the saved filters read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.declaration import Status

OUTCOME_TAG_PREFIX = "outcome:"


@dataclass(frozen=True)
class Outcome:
    tag: str  # outcome:<status>
    state_name: str  # the final state's name, as the runs list shows it
    search: str  # the runs page's saved filter of this outcome


def _outcome(status: str, state_name: str, search: str) -> Outcome:
    return Outcome(f"{OUTCOME_TAG_PREFIX}{status}", state_name, search)


# Where a clearance run can leave a declaration. A declaration awaiting an official is a run suspended (its state
# Suspended or Paused, its tag already outcome:awaiting_official), or, run without waiting, Completed "Awaiting official".
OUTCOMES: dict[Status, Outcome] = {
    Status.RELEASED: _outcome("released", "Released", "Clearance: released"),
    Status.REGISTRATION_REFUSED: _outcome("registration_refused", "Refused", "Clearance: registration refused"),
    Status.RELEASE_REFUSED: _outcome("release_refused", "Refused", "Clearance: release refused"),
    Status.AWAITING_OFFICIAL: _outcome("awaiting_official", "Awaiting official", "Clearance: awaiting an official"),
    Status.RELEASE_CANCELLED: _outcome("release_cancelled", "Release cancelled", "Clearance: release cancelled"),
}

# The request itself refused: no such declaration, or a from-step that cannot run (Failed type, no support report).
NOT_STARTED = _outcome("not_started", "Not started", "Clearance: not started (wrong id or step)")

# A run whose steps stopped short of any of those (a failed step ends Failed, with Prefect's own name).
IN_PROGRESS = "in_progress"


def outcome_of(status: str) -> Outcome | None:
    """The outcome of a declaration in ``status`` (None: a status a run does not end at)."""
    try:
        return OUTCOMES.get(Status(status))
    except ValueError:
        return None


def final_state_names() -> frozenset[str]:
    """Every name a clearance run's final state can have besides Prefect's own (Completed, Failed, ...)."""
    return frozenset({o.state_name for o in OUTCOMES.values()} | {NOT_STARTED.state_name})
