"""The clearance steps as Prefect tasks, and what the clearance flow records besides them."""

from __future__ import annotations

from prefect import task

from customs.services import steps
from customs.services.rerun import record_rerun_event
from customs.services.steps import StepOutcome
from customs.services.support import report_system_failure
from tasks.policy import DATABASE_RETRIES, private_errors, time_limit


@task(name="signature-check", **DATABASE_RETRIES)
@time_limit(120)
@private_errors
def signature_check(application_id: str) -> StepOutcome:
    """Detached CMS signatures on the declaration and every attachment, as of the submission time."""
    return steps.check_signatures(application_id)


@task(name="registration", **DATABASE_RETRIES)
@time_limit(60)
@private_errors
def register(application_id: str) -> StepOutcome:
    """Format and logic control; registration number or refusal with every reason."""
    return steps.register_declaration(application_id)


@task(name="risk-assessment", **DATABASE_RETRIES)
@time_limit(60)
@private_errors
def risk_assessment(application_id: str) -> StepOutcome:
    """Lane from the risk profiles: green, yellow (documentary control) or red (inspection)."""
    return steps.assign_lane(application_id)


@task(name="release", **DATABASE_RETRIES)
@time_limit(60)
@private_errors
def release(application_id: str) -> StepOutcome:
    """Automatic release (code 10) of green, paid declarations; the rest wait for an official."""
    return steps.release_or_hold(application_id)


@task(name="record-rerun", **DATABASE_RETRIES)
@time_limit(60)
@private_errors
def record_rerun(application_id: str, rerun_act: int | None, flow_run_id: str, run_count: int) -> None:
    """Audit that the clearance runs again, and who asked: the official of the signed re-run act (its id; a run given
    an id that is no recorded re-run act of its declaration, or one another run took, is refused), or the Prefect
    UI's Retry."""
    record_rerun_event(application_id, rerun_act, flow_run_id, run_count)


@task(name="report-failure", retries=3, retry_delay_seconds=[1, 2, 4])
@time_limit(60)
def report_failure(
    application_id: str, step: str, error: str, run_log: str, flow_run_id: str | None, run_count: int = 1, hold: bool = False
) -> str:
    """The support report and the applicant's notice of a failed step (the error as its formatted text);
    once per run attempt and step. ``hold``: the reconciler will run it again; the applicant's notice waits."""
    return report_system_failure(
        application_id, step=step, error=error, run_log=run_log, flow_run_id=flow_run_id, run_count=run_count, hold=hold
    ).report_id
