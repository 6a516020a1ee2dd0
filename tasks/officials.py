"""Officials' decisions given as run input, and the deadlines they are held to, as Prefect tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task

from customs.rules import Refused
from customs.services.deadlines import check_registration_deadlines, check_release_deadlines
from customs.services.officials import decide
from tasks.events import emit_deadline_breaches
from tasks.policy import DATABASE_RETRIES


@task(name="official-decision", timeout_seconds=60, **DATABASE_RETRIES)
def apply_official_decision(application_id: str, decision: dict[str, Any]) -> dict[str, Any]:
    """Apply the decision an official gave as run input; a refused one is reported back, not raised."""
    try:
        result = decide(
            application_id,
            decision=decision["decision"],
            official_id=decision["official_id"],
            decision_code=decision.get("decision_code"),
            grounds=decision.get("grounds") or [],
            grounds_text=decision.get("grounds_text") or "",
            decision_id=decision.get("decision_id"),
        )
    except Refused as exc:
        return {"accepted": False, "reason": exc.as_dict()}
    return {"accepted": True, "status": result.status, "replay": result.replay}


@task(name="release-deadlines", timeout_seconds=300, **DATABASE_RETRIES)
def release_deadlines(application_id: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Supervisors alerted at 75% of the release time, breaches recorded at 100% (each once; each breach told to
    Prefect as an event for the automations)."""
    report = check_release_deadlines(application_id=application_id, now=now)
    emit_deadline_breaches(report.breaches)
    return report.as_dict()


@task(name="registration-deadlines", timeout_seconds=300, **DATABASE_RETRIES)
def registration_deadlines() -> dict:
    """The support service alerted at 75% of the registration time, breaches recorded at 100% (each once; each
    breach told to Prefect as an event for the automations)."""
    report = check_registration_deadlines()
    emit_deadline_breaches(report.breaches)
    return dict(report)
