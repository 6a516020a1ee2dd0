"""Re-running a declaration's clearance after a failed step, from the step where it stopped.

The steps are idempotent (each reads the state first), so a new flow run continues where the
declaration stands. What these rules add is the check an official expects: a named step whose effect is
already there (a registration number, a release) is refused rather than silently skipped, and a step
that cannot run yet is refused too.
"""

from __future__ import annotations

from customs.rules import Refused
from models.declaration import Status

STEPS = ("signature_check", "registration", "risk_assessment", "release")

# The step a declaration in this status goes through next (None: nothing for the clearance flow to run).
NEXT_STEP: dict[Status, str | None] = {
    Status.SUBMITTED: "signature_check",
    Status.SIGNATURES_CHECKED: "registration",
    Status.REGISTERED: "risk_assessment",
    Status.LANE_ASSIGNED: "release",
    Status.AWAITING_OFFICIAL: None,
    Status.RELEASED: None,
    Status.REGISTRATION_REFUSED: None,
    Status.RELEASE_REFUSED: None,
    Status.RELEASE_CANCELLED: None,
}


# The steps whose effect is recorded once a declaration is in this status (a refused registration is a
# registration done: its verdict stands, and nothing after it will ever run).
_SIGNED, _REGISTERED, _LANE = STEPS[:1], STEPS[:2], STEPS[:3]
DONE_STEPS: dict[Status, tuple[str, ...]] = {
    Status.SUBMITTED: (),
    Status.SIGNATURES_CHECKED: _SIGNED,
    Status.REGISTERED: _REGISTERED,
    Status.LANE_ASSIGNED: _LANE,
    Status.AWAITING_OFFICIAL: STEPS,
    Status.RELEASED: STEPS,
    Status.REGISTRATION_REFUSED: _REGISTERED,
    Status.RELEASE_REFUSED: STEPS,
    Status.RELEASE_CANCELLED: STEPS,
}


def _done(step: str, status: Status, registration_number: str | None) -> str:
    """What the effect of a step already done is, as the official who named it reads it."""
    if step == "registration":
        if registration_number is None:
            return "registration is done: it was refused, and its reasons stand (a corrected declaration is new bytes)"
        return f"registration is done (number {registration_number}); re-running it would not register again"
    return {
        "signature_check": "the signatures were checked and recorded; their verdict stands",
        "risk_assessment": "the lane is assigned and recorded",
        "release": f"the release step is done (the declaration is {status})",
    }[step]


def rerun_problem(status: Status, from_step: str | None, registration_number: str | None) -> Refused | None:
    """Whether the clearance may run again from ``from_step`` (default: where it stopped).

    A named step whose effect is there is ``STEP_ALREADY_DONE`` whatever the declaration's status, even when
    its clearance is finished (the more specific answer); ``NOTHING_TO_RERUN`` and ``AWAITING_OFFICIAL`` are
    for a finished or waiting clearance when no step is named, or one is named that will never run."""
    if from_step is not None and from_step not in STEPS:
        return Refused.because("STEP_UNKNOWN", f"the steps are {', '.join(STEPS)}; {from_step!r} given", "from_step")
    pending = NEXT_STEP[status]
    if from_step is not None and from_step in DONE_STEPS[status]:
        if pending is not None:
            then = f"the clearance continues from {pending}"
        elif status == Status.AWAITING_OFFICIAL:
            then = "every automatic step is done; the declaration waits for an official's decision (customs decide)"
        else:
            then = f"the declaration is {status}: its clearance is finished"
        return Refused.because(
            "STEP_ALREADY_DONE", f"{_done(from_step, status, registration_number)}; {then}", "from_step", kind="conflict"
        )
    if pending is None:
        if status == Status.AWAITING_OFFICIAL:
            return Refused.because(
                "AWAITING_OFFICIAL",
                "every automatic step is done; the declaration waits for an official's decision (customs decide)",
                kind="conflict",
            )
        return Refused.because("NOTHING_TO_RERUN", f"the declaration is {status}: its clearance is finished", kind="conflict")
    if from_step is None or from_step == pending:
        return None
    return Refused.because(
        "STEP_NOT_READY", f"cannot start from {from_step}: {pending} has not been done yet", "from_step", kind="conflict"
    )
