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


def rerun_problem(status: Status, from_step: str | None, registration_number: str | None) -> Refused | None:
    """Whether the clearance may run again from ``from_step`` (default: where it stopped)."""
    if from_step is not None and from_step not in STEPS:
        return Refused.because("STEP_UNKNOWN", f"the steps are {', '.join(STEPS)}; {from_step!r} given", "from_step")
    pending = NEXT_STEP[status]
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
    if STEPS.index(from_step) < STEPS.index(pending):
        done = {
            "registration": f"registration is done (number {registration_number}); re-running it would not register again",
            "signature_check": "the signatures were checked and recorded; their verdict stands",
            "risk_assessment": "the lane is assigned and recorded",
        }.get(from_step, f"{from_step} is done")
        return Refused.because(
            "STEP_ALREADY_DONE", f"{done}; the clearance continues from {pending}", "from_step", kind="conflict"
        )
    return Refused.because(
        "STEP_NOT_READY", f"cannot start from {from_step}: {pending} has not been done yet", "from_step", kind="conflict"
    )
