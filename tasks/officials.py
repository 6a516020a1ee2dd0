"""A waiting run resumed without an official's signed decision, and the deadlines officials are held to, as
Prefect tasks. Decisions themselves never come through Prefect: they are signed acts (customs.services.officials)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task

from customs.services.deadlines import check_registration_deadlines, check_release_deadlines
from customs.services.officials import refuse_unsigned_resume
from tasks.events import emit_deadline_breaches
from tasks.policy import DATABASE_RETRIES, time_limit


@task(name="unsigned-resume", **DATABASE_RETRIES)
@time_limit(60)
def refuse_resume_without_decision(application_id: str, flow_run_id: str) -> bool:
    """The run was resumed with no decision recorded: audited as refused; the run waits again."""
    return refuse_unsigned_resume(application_id, flow_run_id=flow_run_id)


@task(name="release-deadlines", **DATABASE_RETRIES)
@time_limit(300)
def release_deadlines(application_id: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Supervisors alerted at 75% of the release time, breaches recorded at 100% (each once; each breach told to
    Prefect as an event for the automations)."""
    report = check_release_deadlines(application_id=application_id, now=now)
    emit_deadline_breaches(report.breaches)
    return report.as_dict()


@task(name="registration-deadlines", **DATABASE_RETRIES)
@time_limit(300)
def registration_deadlines() -> dict:
    """The support service alerted at 75% of the registration time, breaches recorded at 100% (each once; each
    breach told to Prefect as an event for the automations)."""
    report = check_registration_deadlines()
    emit_deadline_breaches(report.breaches)
    return dict(report)
