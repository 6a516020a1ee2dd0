"""Deadlines kept from stored times: registration (automatic, so a late one is a failure of the system:
the support service is told) and release (the zone's supervisors are told). Alerts at a share of the
time, breaches at the deadline, each recorded once in the audit chain, whatever the number of watchers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from customs.rules.officials import release_alert_at
from customs.rules.registration import registration_deadline_stage
from models.audit import append_event
from models.declaration import Declaration, Status
from models.outbox import Notice, NoticeKind, queue_notice
from models.reference import ReferenceData


@dataclass
class DeadlineReport:
    alerted: list[str]
    breached: list[str]
    # each breach recorded by this pass, as the event that tells Prefect's automations (tasks/officials.py emits it)
    breaches: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"alerted": self.alerted, "breached": self.breached}


def _skip_locked(session: Session, query):
    """PostgreSQL: rows another watcher is handling are skipped, not waited for (SQLite has one writer anyway)."""
    return query.with_for_update(skip_locked=True) if session.get_bind().dialect.name == "postgresql" else query


# ----------------------------------------------------------------------------------------------
# Release deadlines (4 hours from registration)


def zone_supervisors(declaration: Declaration, reference: ReferenceData):
    """The supervisors of the declaration's zone (of its office when the zone has none)."""
    office = declaration.customs_office or ""
    return reference.supervisors_of(office, declaration.zone) or reference.supervisors_of(office, None)


def release_alert_key(stage: str, application_id: str, official_id: str) -> str:
    """The outbox dedup key of a supervisor's release deadline alert: one e-mail per stage, declaration and person."""
    return f"release_deadline_{stage}:{application_id}:{official_id}"


def alert_supervisors(
    session: Session,
    declaration: Declaration,
    reference: ReferenceData,
    now: datetime,
    event_seq: int | None,
    *,
    stage: str,
    skip_existing: bool = False,
) -> list[str]:
    """Queue the alert of each supervisor of the zone; returns their e-mail addresses. ``skip_existing``: leave out a
    supervisor already alerted for this stage (the automations' path, after the breach's own transaction)."""
    minutes_left = int((declaration.release_due_at - now).total_seconds() // 60)
    queued = []
    for supervisor in zone_supervisors(declaration, reference):
        key = release_alert_key(stage, declaration.application_id, supervisor.id)
        if skip_existing and session.exec(select(Notice.id).where(Notice.dedup_key == key)).first() is not None:
            continue
        queued.append(supervisor.email)
        queue_notice(
            session,
            application_id=declaration.application_id,
            kind=NoticeKind.RELEASE_DEADLINE_ALERT,
            dedup_key=key,
            recipient=supervisor.email,
            language="ru",
            at=now,
            event_seq=event_seq,
            facts={
                "event_at": now.isoformat(),
                "stage": stage,
                "recipient_name": supervisor.name,
                "zone": declaration.zone,
                "lane": declaration.lane,
                "registered_at": declaration.registered_at.isoformat() if declaration.registered_at else None,
                "deadline_at": declaration.release_due_at.isoformat(),
                "minutes_left": minutes_left,
                "waiting_reasons": list(declaration.reasons),
                "registration_number": declaration.registration_number,
            },
        )
    return queued


def breach_occurrence(declaration: Declaration, kind: str, due_at: datetime, now: datetime) -> dict[str, Any]:
    return {
        "kind": kind,  # registration or release
        "application_id": declaration.application_id,
        "registration_number": declaration.registration_number,
        "office": declaration.customs_office,
        "zone": declaration.zone,
        "status": str(declaration.status),
        "due_at": due_at.isoformat(),
        "breached_at": now.isoformat(),
    }


def record_release_breach(session: Session, declaration: Declaration, now: datetime, reference: ReferenceData) -> bool:
    """Record, once, that the release deadline passed without a decision; supervisors are told."""
    if declaration.release_breached_at is not None:
        return False
    declaration.release_breached_at = now
    session.add(declaration)
    event = append_event(
        session,
        application_id=declaration.application_id,
        office=declaration.customs_office,
        event="release_deadline_breached",
        actor="system",
        at=now,
        details={
            "release_due_at": declaration.release_due_at.isoformat(),
            "zone": declaration.zone,
            "registration_number": declaration.registration_number,
        },
    )
    alert_supervisors(session, declaration, reference, now, event.seq, stage="breach")
    return True


def check_release_deadlines(
    *, now: datetime | None = None, settings: Settings | None = None, application_id: str | None = None
) -> DeadlineReport:
    """Alert the zone's supervisors at 75% of the release time; record a breach at 100%. Each once."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    report = DeadlineReport([], [])
    with transaction(settings) as session:
        query = select(Declaration).where(
            Declaration.status == Status.AWAITING_OFFICIAL,
            Declaration.release_due_at.is_not(None),
            Declaration.release_breached_at.is_(None),
        )
        if application_id:
            query = query.where(Declaration.application_id == application_id)
        for declaration in session.exec(_skip_locked(session, query)):
            if declaration.registered_at is None:
                continue
            alert_at = release_alert_at(declaration.registered_at, declaration.release_due_at, settings.release_alert_fraction)
            if now >= declaration.release_due_at:
                record_release_breach(session, declaration, now, reference)
                report.breached.append(declaration.application_id)
                report.breaches.append(breach_occurrence(declaration, "release", declaration.release_due_at, now))
            elif now >= alert_at and declaration.release_alerted_at is None:
                declaration.release_alerted_at = now
                session.add(declaration)
                event = append_event(
                    session,
                    application_id=declaration.application_id,
                    office=declaration.customs_office,
                    event="release_deadline_alert",
                    actor="system",
                    at=now,
                    details={"release_due_at": declaration.release_due_at.isoformat(), "zone": declaration.zone},
                )
                alert_supervisors(session, declaration, reference, now, event.seq, stage="alert")
                report.alerted.append(declaration.application_id)
    return report


# ----------------------------------------------------------------------------------------------
# Registration deadlines (2 hours from submission)


def queue_registration_alert(
    session: Session,
    declaration: Declaration,
    settings: Settings,
    *,
    stage: str,
    due: datetime,
    now: datetime,
    event_seq: int | None,
    skip_existing: bool,
) -> list[str]:
    """The support service's registration deadline alert (one per stage and declaration); returns the address queued
    (none when ``skip_existing`` finds it queued already)."""
    key = f"registration_deadline_{stage}:{declaration.application_id}"
    if skip_existing and session.exec(select(Notice.id).where(Notice.dedup_key == key)).first() is not None:
        return []
    queue_notice(
        session,
        application_id=declaration.application_id,
        kind=NoticeKind.REGISTRATION_DEADLINE_ALERT,
        dedup_key=key,
        recipient=settings.support_address,
        language=settings.support_language,
        at=now,
        event_seq=event_seq,
        facts={
            "event_at": now.isoformat(),
            "status": str(declaration.status),
            "deadline_at": due.isoformat(),
            "minutes_left": int((due - now).total_seconds() // 60),
            "stage": stage,
            "registration_number": None,
        },
    )
    return [settings.support_address]


class RegistrationReport(dict):
    """``{"alerted": [...], "breached": [...]}``, and ``breaches``: each breach recorded, as its event's facts."""

    breaches: list[dict[str, Any]]


def check_registration_deadlines(*, now: datetime | None = None, settings: Settings | None = None) -> RegistrationReport:
    """Alert the support service at 75% of the registration time, record the breach at 100%; each once."""
    settings = settings or get_settings()
    now = now or utcnow()
    report = RegistrationReport(alerted=[], breached=[])
    report.breaches = []
    alert_after = settings.registration_deadline * settings.registration_alert_fraction
    with transaction(settings) as session:
        query = select(Declaration).where(
            Declaration.status.in_((Status.SUBMITTED, Status.SIGNATURES_CHECKED)),
            Declaration.registration_breached_at.is_(None),
            Declaration.submitted_at <= now - alert_after,
        )
        for declaration in session.exec(_skip_locked(session, query)):
            stage, due = registration_deadline_stage(
                declaration.submitted_at, now, settings.registration_deadline, settings.registration_alert_fraction
            )
            if stage is None or (stage == "alert" and declaration.registration_alerted_at is not None):
                continue
            if stage == "breach":
                declaration.registration_breached_at = now
                report["breached"].append(declaration.application_id)
                report.breaches.append(breach_occurrence(declaration, "registration", due, now))
            else:
                declaration.registration_alerted_at = now
                report["alerted"].append(declaration.application_id)
            session.add(declaration)
            event = append_event(
                session,
                application_id=declaration.application_id,
                office=declaration.customs_office,
                actor="system",
                at=now,
                event="registration_deadline_breached" if stage == "breach" else "registration_deadline_alert",
                details={"due_at": due.isoformat(), "status": str(declaration.status)},
            )
            queue_registration_alert(
                session, declaration, settings, stage=stage, due=due, now=now, event_seq=event.seq, skip_existing=False
            )
    return report
