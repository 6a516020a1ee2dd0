"""Alerts from Prefect's automations (customs.orchestration.automations), routed to the people they concern.

The automations call the intake API's ``POST /v1/ops/alerts`` with the event that triggered them; this module
decides who is reached, records the alert (``ops_alert``, one row per occurrence) and queues the e-mails in the
outbox, each with its own dedup key, so nobody gets the same alert twice for the same occurrence:

- a clearance run Failed or Crashed (``prefect.flow-run.Failed`` / ``.Crashed`` of the flow ``clearance``): the
  support report of that attempt (the existing support path, ``customs.services.support``: the run may have
  queued it itself when a step failed; otherwise it is made here from the run's state) and a copy of it to the
  operations mailbox (``CUSTOMS_OPS_ADDRESS``);
- a release deadline breached: the supervisors of the declaration's zone; a registration deadline breached: the
  support service (registration is automatic, so a late one is a failure of the system);
- a print request overdue (30 minutes, not printed): the supervisors of its office.

For breaches the e-mails are queued in the breach's own transaction (customs.services.deadlines and .printing),
which is the single source: it is never lost and needs no Prefect. The automation's call lands on the same dedup
keys, so it queues only what is missing (a supervisor added since, a breach recorded before this release) and
records who was reached.
"""

from __future__ import annotations

import hmac
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from customs.core.clock import utcnow
from customs.core.db import DeclarationNotFound, find_declaration, transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from customs.rules.reconcile import healed_by_reconciler
from customs.services.deadlines import alert_supervisors as alert_zone_supervisors
from customs.services.deadlines import queue_registration_alert, zone_supervisors
from customs.services.printing import alert_office
from customs.services.support import report_system_failure
from models.audit import AuditEvent
from models.ops_alert import OpsAlert
from models.outbox import SYSTEM_APPLICATION, Notice, NoticeAttachment, NoticeKind, queue_notice
from models.printing import PrintRequest

FAILED_RUN_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed")
REGISTRATION_DEADLINE_BREACHED = "customs.declaration.registration-deadline-breached"
RELEASE_DEADLINE_BREACHED = "customs.declaration.release-deadline-breached"
PRINT_REQUEST_OVERDUE = "customs.print-request.overdue"
RECONCILER = "the workers' reconciler"  # who reported a crash Prefect's events did not bring (crash_seen_by_reconciler)
EVENTS = (*FAILED_RUN_EVENTS, REGISTRATION_DEADLINE_BREACHED, RELEASE_DEADLINE_BREACHED, PRINT_REQUEST_OVERDUE)


class AlertRefused(ValueError):
    """The body is not an alert this endpoint knows (422)."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


# ----------------------------------------------------------------------------------------------
# The token the automations present


def _token_file(settings: Settings) -> Path:
    return settings.data_dir / "ops-alert-token"


def ops_alert_token(settings: Settings | None = None) -> str:
    """CUSTOMS_OPS_ALERT_TOKEN, or a random token kept in data_dir/ops-alert-token (mode 0600, made on first need)."""
    settings = settings or get_settings()
    if settings.ops_alert_token is not None:
        return settings.ops_alert_token.get_secret_value()
    path = _token_file(settings)
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


def token_matches(given: str | None, settings: Settings | None = None) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), ops_alert_token(settings).encode())


# ----------------------------------------------------------------------------------------------
# Receiving an alert


def _related(event: dict[str, Any]) -> list[dict[str, str]]:
    return [r for r in event.get("related") or [] if isinstance(r, dict)]


def _suffix(resource_id: str, prefix: str) -> str:
    if not resource_id.startswith(prefix) or len(resource_id) == len(prefix):
        raise AlertRefused("event.resource", f"expected a resource {prefix}<id>, got {resource_id!r}")
    return resource_id[len(prefix) :]


def _existing(session: Session, key: str) -> OpsAlert | None:
    return session.exec(select(OpsAlert).where(OpsAlert.key == key)).first()


def _answer(alert: OpsAlert, created: bool) -> dict[str, Any]:
    return {
        "alert": alert.key,
        "kind": alert.kind,
        "created": created,
        "application_id": alert.application_id,
        "recipients": list(alert.recipients),
        "details": dict(alert.details),
    }


def receive_alert(body: dict[str, Any], *, now: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Route one automation's call (``{"automation": name, "event": {...}}``); returns the alert as recorded.
    The same occurrence again returns the first record, ``created: false``, and reaches nobody."""
    settings = settings or get_settings()
    now = now or utcnow()
    event = body.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("resource"), dict):
        raise AlertRefused("event", "the body carries no Prefect event (event.event, event.resource)")
    name = str(event.get("event") or "")
    resource_id = str(event["resource"].get("prefect.resource.id") or "")
    common = {
        "automation": str(body.get("automation") or "")[:200] or None,
        "event": name,
        "event_id": str(event.get("id") or "")[:40] or None,
        "resource_id": resource_id[:200],
        "received_at": now,
    }
    try:
        if name in FAILED_RUN_EVENTS:
            return _failed_run(event, common, now, settings)
        if name in (RELEASE_DEADLINE_BREACHED, REGISTRATION_DEADLINE_BREACHED):
            return _deadline_breached(event, common, now, settings)
        if name == PRINT_REQUEST_OVERDUE:
            return _print_overdue(event, common, now, settings)
    except IntegrityError:  # the same occurrence recorded at this moment by another call: that one reached them
        with transaction(settings) as session:
            alert = _existing(session, _key_of(event))
            if alert is not None:
                return _answer(alert, created=False)
        raise
    raise AlertRefused("event.event", f"no alert is defined for the event {name!r}; known: {', '.join(EVENTS)}")


def _key_of(event: dict[str, Any]) -> str:
    name = str(event.get("event") or "")
    resource = event["resource"]
    resource_id = str(resource.get("prefect.resource.id") or "")
    if name in FAILED_RUN_EVENTS:  # keyed by the declaration's failure (failure_key); this for a run of none
        return f"clearance_run:{_suffix(resource_id, 'prefect.flow-run.')}"
    if name == PRINT_REQUEST_OVERDUE:
        return f"print_overdue:{_suffix(resource_id, 'customs.print-request.')}"
    stage = "release" if name == RELEASE_DEADLINE_BREACHED else "registration"
    return f"{stage}_deadline_breached:{_suffix(resource_id, 'customs.declaration.')}"


# A failed or crashed clearance run: the support report of the attempt, and its copy to the operations mailbox


def _application_of_run(event: dict[str, Any]) -> str | None:
    for related in _related(event):
        rid = related.get("prefect.resource.id", "")
        if related.get("prefect.resource.role") == "tag" and rid.startswith("prefect.tag.application:"):
            return rid.removeprefix("prefect.tag.application:")
    return event["resource"].get("prefect.resource.name")  # the run's name: application id, or registration number


def _support_notice(session: Session, application_id: str, flow_run_id: str, run_count: str) -> Notice | None:
    prefix = f"support_report:{application_id}:{flow_run_id}:{run_count}:"
    return session.exec(
        select(Notice).where(Notice.kind == NoticeKind.SUPPORT_REPORT, Notice.dedup_key.startswith(prefix)).order_by(Notice.id)
    ).first()


def _failed_run(event: dict[str, Any], common: dict[str, Any], now: datetime, settings: Settings) -> dict[str, Any]:
    resource = event["resource"]
    return clearance_failure_alert(
        _application_of_run(event) or "",
        flow_run_id=_suffix(common["resource_id"], "prefect.flow-run."),
        run_name=str(resource.get("prefect.resource.name") or ""),
        run_count=str(resource.get("prefect.run-count") or "1"),
        state=resource.get("prefect.state-name") or common["event"].rsplit(".", 1)[-1],
        message=resource.get("prefect.state-message") or "",
        seen=f"Prefect event {common['event']} ({common['event_id']}) at {event.get('occurred')}",
        common=common,
        now=now,
        settings=settings,
    )


def crash_seen_by_reconciler(
    application_id: str,
    *,
    flow_run_id: str,
    run_name: str,
    run_count: int,
    message: str,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """A crashed clearance run as the workers' reconciler found it: the same alert as the automation's call for
    it (the same key, so whichever comes first reaches support and the operations mailbox, the other nobody).
    It is how a crash is reported when Prefect's events did not get through (its Redis away in the
    high-availability setup: no automation fired)."""
    now = now or utcnow()
    common = {
        "automation": RECONCILER,
        "event": "prefect.flow-run.Crashed",
        "event_id": None,
        "resource_id": f"prefect.flow-run.{flow_run_id}",
        "received_at": now,
    }
    return clearance_failure_alert(
        application_id,
        flow_run_id=flow_run_id,
        run_name=run_name,
        run_count=str(run_count),
        state="Crashed",
        message=message,
        seen=f"found Crashed by the workers' reconciler at {now.isoformat()}",
        common=common,
        now=now,
        settings=settings or get_settings(),
    )


def failure_key(declaration: Any) -> str:
    """One alert per declaration and failure: a failure is where the declaration stopped (its status, and when it
    entered it). Whatever run count, flow run or event id a call carries, a call about a declaration that has not
    moved since its last alert is the same failure: a replayed (or forged) event, a second automation firing, the
    reconciler's sighting of the crash the automation already reported, or a re-run that stopped at the same
    point. A failure after the declaration moved on is a new one."""
    return f"clearance_failure:{declaration.application_id}:{declaration.status}:{declaration.updated_at:%Y%m%dT%H%M%S%f}"


def clearance_failure_alert(
    application_ref: str,
    *,
    flow_run_id: str,
    run_name: str,
    run_count: str,
    state: str,
    message: str,
    seen: str,
    common: dict[str, Any],
    now: datetime,
    settings: Settings,
) -> dict[str, Any]:
    """The support report of a failed or crashed clearance (the run's own, or one made here from its state) and
    its copy to the operations mailbox, once per declaration and failure (``failure_key``)."""
    with transaction(settings) as session:
        try:
            declaration = find_declaration(session, application_ref)
        except DeclarationNotFound:
            declaration = None
        key = failure_key(declaration) if declaration is not None else f"clearance_run:{flow_run_id}"
        known = _existing(session, key)
        if known is not None:
            return _answer(known, created=False)
        application_id = declaration.application_id if declaration is not None else None
        support = _support_notice(session, application_id, flow_run_id, run_count) if application_id else None
        reported_by_run = support is not None
    try:
        if application_id is None:  # nothing to report on; recorded so that ops can see it was received
            with transaction(settings) as session:
                alert = OpsAlert(
                    key=key, kind="clearance_run_failed", details={"state": state, "message": message[:2000]}, **common
                )
                session.add(alert)
                session.flush()
                return _answer(alert, created=True)
        if not reported_by_run:  # crashed (its worker died), or failed outside a step: the report is made from its state
            _report_from_state(application_id, flow_run_id, run_name, run_count, state, message, seen, now, settings)
        by = RECONCILER if common.get("automation") == RECONCILER else "the automation"
        return _record_failure_alert(
            key, application_id, flow_run_id, run_count, state, message, reported_by_run, by, common, now, settings
        )
    except IntegrityError:  # the same failure recorded at this moment by another call: that one reached them
        with transaction(settings) as session:
            known = _existing(session, key)
            if known is not None:
                return _answer(known, created=False)
        raise


def _report_from_state(
    application_id: str,
    flow_run_id: str,
    run_name: str,
    run_count: str,
    state: str,
    message: str,
    seen: str,
    now: datetime,
    settings: Settings,
) -> None:
    again = (
        f" The workers' reconciler runs it again (up to CUSTOMS_RECONCILE_MAX_ATTEMPTS = {settings.reconcile_max_attempts})."
        if state == "Crashed"
        else ""
    )
    count = int(run_count) if run_count.isdigit() else 1
    report_system_failure(
        application_id,
        step="clearance_run",
        error=(
            f"The clearance run {run_name} (flow run {flow_run_id}, attempt {run_count}) "
            f"ended {state} without reporting a failed step.{again}\n\nState message: {message or '-'}"
        ),
        run_log=f"{seen}\n{message}\n",
        flow_run_id=flow_run_id,
        run_count=count,
        now=now,
        settings=settings,
        # a crashed run is run again by the workers' reconciler: the declarant hears of it only if that fails too
        hold=healed_by_reconciler(message, count, max_attempts=settings.reconcile_max_attempts, crashed=state == "Crashed"),
    )


def _record_failure_alert(
    key: str,
    application_id: str,
    flow_run_id: str,
    run_count: str,
    state: str,
    message: str,
    reported_by_run: bool,
    by: str,
    common: dict[str, Any],
    now: datetime,
    settings: Settings,
) -> dict[str, Any]:
    with transaction(settings) as session:
        known = _existing(session, key)
        if known is not None:
            return _answer(known, created=False)
        support = _support_notice(session, application_id, flow_run_id, run_count)
        recipients = [support.recipient or settings.support_address]
        copy_key = f"ops_copy:{support.dedup_key}"[:120]
        if session.exec(select(Notice.id).where(Notice.dedup_key == copy_key)).first() is None:
            attachments = session.exec(select(NoticeAttachment).where(NoticeAttachment.notice_id == support.id)).all()
            queue_notice(
                session,
                application_id=application_id,
                kind=NoticeKind.SUPPORT_REPORT,
                dedup_key=copy_key,
                recipient=settings.ops_address,
                language=support.language,
                facts=dict(support.facts),
                at=now,
                event_seq=support.event_seq,
                attachments=[(a.filename, a.content_type, a.content) for a in attachments],
            )
        recipients.append(settings.ops_address)
        alert = OpsAlert(
            key=key,
            kind="clearance_run_failed",
            application_id=application_id,
            recipients=recipients,
            details={
                "state": state,
                "message": message[:2000],
                "flow_run_id": flow_run_id,
                "run_count": run_count,
                "report_id": support.facts.get("report_id"),
                "reported_by": "the run" if reported_by_run else by,
            },
            **common,
        )
        session.add(alert)
        session.flush()
        return _answer(alert, created=True)


# Deadlines breached and print requests overdue: the people the breach's transaction alerted, and any it missed


def _audit_seq(session: Session, application_id: str, event: str) -> int | None:
    return session.exec(
        select(AuditEvent.seq)
        .where(AuditEvent.application_id == application_id, AuditEvent.event == event)
        .order_by(AuditEvent.seq)
    ).first()


def _deadline_breached(event: dict[str, Any], common: dict[str, Any], now: datetime, settings: Settings) -> dict[str, Any]:
    key = _key_of(event)
    release = common["event"] == RELEASE_DEADLINE_BREACHED
    reference = load_reference(settings.reference_dir)
    with transaction(settings) as session:
        known = _existing(session, key)
        if known is not None:
            return _answer(known, created=False)
        try:
            declaration = find_declaration(session, _suffix(common["resource_id"], "customs.declaration."))
        except DeclarationNotFound:
            raise AlertRefused("event.resource", f"no declaration {common['resource_id']!r}") from None
        breached_at = declaration.release_breached_at if release else declaration.registration_breached_at
        if breached_at is None:
            raise AlertRefused(
                "event",
                f"no {'release' if release else 'registration'} deadline breach is recorded for {declaration.application_id}",
            )
        if release:
            seq = _audit_seq(session, declaration.application_id, "release_deadline_breached")
            queued = alert_zone_supervisors(session, declaration, reference, breached_at, seq, stage="breach", skip_existing=True)
            recipients = [s.email for s in zone_supervisors(declaration, reference)]
        else:
            seq = _audit_seq(session, declaration.application_id, "registration_deadline_breached")
            queued = queue_registration_alert(
                session,
                declaration,
                settings,
                stage="breach",
                due=declaration.submitted_at + settings.registration_deadline,
                now=breached_at,
                event_seq=seq,
                skip_existing=True,
            )
            recipients = [settings.support_address]
        alert = OpsAlert(
            key=key,
            kind="deadline_breached",
            application_id=declaration.application_id,
            recipients=recipients,
            details={
                "deadline": "release" if release else "registration",
                "breached_at": breached_at.isoformat(),
                "zone": declaration.zone,
                "office": declaration.customs_office,
                "queued_now": queued,  # normally empty: the breach's own transaction queued them
            },
            **common,
        )
        session.add(alert)
        session.flush()
        return _answer(alert, created=True)


def _print_overdue(event: dict[str, Any], common: dict[str, Any], now: datetime, settings: Settings) -> dict[str, Any]:
    key = _key_of(event)
    request_id = _suffix(common["resource_id"], "customs.print-request.")
    reference = load_reference(settings.reference_dir)
    with transaction(settings) as session:
        known = _existing(session, key)
        if known is not None:
            return _answer(known, created=False)
        request = session.exec(select(PrintRequest).where(PrintRequest.request_id == request_id)).first()
        if request is None:
            raise AlertRefused("event.resource", f"no print request {request_id!r}")
        if request.breached_at is None:
            raise AlertRefused("event", f"print request {request_id} is not recorded as overdue")
        seq = session.exec(
            select(AuditEvent.seq)
            .where(AuditEvent.application_id == request.application_id, AuditEvent.event == "print_deadline_breached")
            .order_by(AuditEvent.seq.desc())
        ).first()
        queued = alert_office(session, request, reference, request.breached_at, seq, "breach", skip_existing=True)
        alert = OpsAlert(
            key=key,
            kind="print_overdue",
            application_id=request.application_id,
            recipients=[s.email for s in reference.supervisors_of(request.office, None)],
            details={
                "request_id": request_id,
                "office": request.office,
                "due_at": request.due_at.isoformat(),
                "breached_at": request.breached_at.isoformat(),
                "printed": request.printed_at is not None,
                "queued_now": queued,
            },
            **common,
        )
        session.add(alert)
        session.flush()
        return _answer(alert, created=True)


# The project's own objects missing on the Prefect server (its database lost or reset): the hosts re-create them


PREFECT_STATE_MISSING = "prefect_state_missing"


def queue_ops_system_alert(
    session: Session, settings: Settings, *, key: str, what: str, lines: list[str], noticed_by: str, at: datetime
) -> Notice | None:
    """An e-mail to the operations mailbox about the service itself (``what``: prefect_state_missing,
    restore_detected), in the caller's transaction, once per ``key``."""
    dedup_key = f"ops_system_alert:{key}"[:120]
    if session.exec(select(Notice.id).where(Notice.dedup_key == dedup_key)).first() is not None:
        return None
    return queue_notice(
        session,
        application_id=SYSTEM_APPLICATION,
        kind=NoticeKind.OPS_SYSTEM_ALERT,
        dedup_key=dedup_key,
        recipient=settings.ops_address,
        language=settings.support_language,
        facts={"what": what, "lines": [line[:500] for line in lines[:50]], "noticed_by": noticed_by[:200], "at": at},
        at=at,
    )


def record_prefect_state_missing(
    missing: list[str], *, noticed_by: str, now: datetime | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Record that the project's objects were missing on the Prefect server (``missing``: what, by name) as an
    operations alert (``customs ops``, GET /v1/ops/alerts), once per minute whoever noticed it (the job gate, a
    host's periodic check, the clearance starter): several hosts noticing the same loss record one alert."""
    settings = settings or get_settings()
    now = now or utcnow()
    key = f"{PREFECT_STATE_MISSING}:{now:%Y%m%d%H%M}"
    try:
        with transaction(settings) as session:
            known = _existing(session, key)
            if known is not None:
                return _answer(known, created=False)
            alert = OpsAlert(
                key=key,
                kind=PREFECT_STATE_MISSING,
                event="customs.prefect.state-missing",
                resource_id="customs.prefect-server",
                received_at=now,
                automation=None,
                recipients=[settings.ops_address],  # and in customs ops, GET /v1/ops/alerts, readiness
                details={"missing": missing[:50], "noticed_by": noticed_by[:200], "rebuilt": "re-created by the host"},
            )
            session.add(alert)
            queue_ops_system_alert(
                session, settings, key=key, what="prefect_state_missing", lines=missing, noticed_by=noticed_by, at=now
            )
            session.flush()
            return _answer(alert, created=True)
    except IntegrityError:  # another host recorded it at this moment
        with transaction(settings) as session:
            known = _existing(session, key)
            assert known is not None
            return _answer(known, created=False)


def recent_alerts(*, limit: int = 20, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The last alerts received, newest first (customs ops)."""
    with transaction(settings or get_settings()) as session:
        rows = session.exec(select(OpsAlert).order_by(OpsAlert.id.desc()).limit(limit)).all()
        return [{**_answer(r, created=True), "received_at": r.received_at.isoformat(), "automation": r.automation} for r in rows]
