"""Re-running a declaration's clearance after a failed step, from the step where it stopped.

The steps are idempotent (each reads the state first), so a new flow run continues where the
declaration stands. What this module adds is the check an official expects: a named step whose effect
is already there (a registration number, a release) is refused rather than silently skipped, and a
step that cannot run yet is refused too. Every re-run is audited with who asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect import task
from sqlmodel import or_, select

from customs.db import transaction
from customs.timeutil import utcnow
from models.audit import append_event
from models.declaration import Declaration, Status
from tasks.common import DeclarationNotFound, retry_on_database_error

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


class RerunRefused(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def rerun_problem(status: Status, from_step: str | None, registration_number: str | None) -> RerunRefused | None:
    """Whether the clearance may run again from ``from_step`` (default: where it stopped)."""
    if from_step is not None and from_step not in STEPS:
        return RerunRefused("STEP_UNKNOWN", f"the steps are {', '.join(STEPS)}; {from_step!r} given")
    pending = NEXT_STEP[status]
    if pending is None:
        if status == Status.AWAITING_OFFICIAL:
            return RerunRefused("AWAITING_OFFICIAL", "every automatic step is done; the declaration waits for an official's decision (customs decide)")
        return RerunRefused("NOTHING_TO_RERUN", f"the declaration is {status}: its clearance is finished")
    if from_step is None or from_step == pending:
        return None
    if STEPS.index(from_step) < STEPS.index(pending):
        done = {"registration": f"registration is done (number {registration_number}); re-running it would not register again",
                "signature_check": "the signatures were checked and recorded; their verdict stands",
                "risk_assessment": "the lane is assigned and recorded"}.get(from_step, f"{from_step} is done")
        return RerunRefused("STEP_ALREADY_DONE", f"{done}; the clearance continues from {pending}")
    return RerunRefused("STEP_NOT_READY", f"cannot start from {from_step}: {pending} has not been done yet")


@dataclass(frozen=True)
class RerunPlan:
    application_id: str
    from_step: str


def plan_rerun(key: str, from_step: str | None = None) -> RerunPlan:
    with transaction() as session:
        declaration = session.exec(
            select(Declaration).where(or_(Declaration.application_id == key, Declaration.registration_number == key))
        ).first()
        if declaration is None:
            raise DeclarationNotFound(key)
        problem = rerun_problem(Status(declaration.status), from_step, declaration.registration_number)
        if problem is not None:
            raise problem
        return RerunPlan(declaration.application_id, NEXT_STEP[Status(declaration.status)])


def record_rerun_event(application_id: str, actor: str, flow_run_id: str, run_count: int, now: datetime | None = None) -> None:
    with transaction() as session:
        declaration = session.exec(select(Declaration).where(Declaration.application_id == application_id)).first()
        if declaration is None:
            raise DeclarationNotFound(application_id)
        append_event(session, application_id=application_id, event="clearance_rerun", actor=actor[:60], at=now or utcnow(),
                     details={"flow_run_id": flow_run_id, "run_count": run_count, "status": str(declaration.status),
                              "from_step": NEXT_STEP.get(Status(declaration.status))})


@task(name="record-rerun", retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_on_database_error, timeout_seconds=60)
def record_rerun(application_id: str, actor: str, flow_run_id: str, run_count: int) -> None:
    """Audit that the clearance runs again, and who asked (an official, or the Prefect UI's Retry)."""
    record_rerun_event(application_id, actor, flow_run_id, run_count)
