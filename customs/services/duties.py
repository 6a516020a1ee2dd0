"""Whether the minute jobs have something to do now: a few cheap reads, so that the clearance workers' job gate
(customs.orchestration.gate) creates a run of deadline-watch, outbox-dispatch or print-deadlines only when one
would do something, instead of a run every minute that finds nothing (issue 17, item 4).

Each answer reads the same stored times as the job itself, so a job the gate starts finds what the gate saw
(or less, when another worker's run took it first: that run does nothing, harmlessly).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, select

from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.core.settings import Settings, get_settings
from customs.rules.officials import release_alert_at
from customs.services.printing import copies_to_render
from models.declaration import Declaration, Status
from models.outbox import Notice, NoticeStatus
from models.printing import PrintRequest, PrintStatus

GATED_JOBS = ("deadline-watch", "outbox-dispatch", "print-deadlines")


def _deadlines_due(session: Session, now: datetime, settings: Settings) -> bool:
    alert_after = settings.registration_deadline * settings.registration_alert_fraction
    registration = session.exec(
        select(Declaration.submitted_at, Declaration.registration_alerted_at).where(
            Declaration.status.in_((Status.SUBMITTED, Status.SIGNATURES_CHECKED)),
            Declaration.registration_breached_at.is_(None),
            Declaration.submitted_at <= now - alert_after,
        )
    ).all()
    for submitted_at, alerted_at in registration:
        if alerted_at is None or now >= submitted_at + settings.registration_deadline:
            return True
    waiting = session.exec(
        select(Declaration.registered_at, Declaration.release_due_at, Declaration.release_alerted_at).where(
            Declaration.status == Status.AWAITING_OFFICIAL,
            Declaration.release_due_at.is_not(None),
            Declaration.release_breached_at.is_(None),
        )
    ).all()
    for registered_at, due_at, alerted_at in waiting:
        if registered_at is None:
            continue
        alert_at = release_alert_at(registered_at, due_at, settings.release_alert_fraction)
        if now >= due_at or (alerted_at is None and now >= alert_at):
            return True
    return False


def _print_deadlines_due(session: Session, now: datetime) -> bool:
    requests = session.exec(
        select(PrintRequest.alerted_at, PrintRequest.due_at).where(
            PrintRequest.status == PrintStatus.PENDING, PrintRequest.breached_at.is_(None), PrintRequest.alert_at <= now
        )
    ).all()
    return any(alerted_at is None or now >= due_at for alerted_at, due_at in requests)


def jobs_with_work(*, now: datetime | None = None, settings: Settings | None = None) -> set[str]:
    """The gated jobs that would do something now (the periodic duties aside: see customs.orchestration.gate)."""
    settings = settings or get_settings()
    now = now or utcnow()
    due = set()
    with transaction(settings) as session:
        if _deadlines_due(session, now, settings):
            due.add("deadline-watch")
        if session.exec(
            select(Notice.id).where(Notice.status == NoticeStatus.PENDING, Notice.next_attempt_at <= now).limit(1)
        ).first():
            due.add("outbox-dispatch")
        if _print_deadlines_due(session, now):
            due.add("print-deadlines")
    if "print-deadlines" not in due and copies_to_render(now=now, older_than=timedelta(seconds=60), limit=1):
        due.add("print-deadlines")
    return due
