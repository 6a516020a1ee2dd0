"""Use cases where the CLI, the HTTP API and the flows meet the database: one function per use case."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, or_, select

from customs.db import transaction
from customs.settings import Settings, get_settings
from customs.timeutil import kz_display, kz_local, utcnow
from models.audit import AuditEvent
from models.declaration import Attachment, Declaration, Status
from tasks.common import DeclarationNotFound

CHANNELS = ("electronic", "portal", "paper")
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


class IntakeError(ValueError):
    """The submission cannot be accepted; nothing was stored."""

    def __init__(self, code: str, message: str, where: str = "$"):
        super().__init__(f"{code} at {where}: {message}")
        self.code = code
        self.where = where
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.where, "message": self.message}


@dataclass(frozen=True)
class IncomingAttachment:
    filename: str
    content: bytes
    signature: bytes | None


@dataclass(frozen=True)
class Submission:
    application_id: str
    submitted_at: datetime
    status: str
    created: bool  # False when identical bytes had been submitted before


def new_application_id(now: datetime) -> str:
    token = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"A{kz_local(now):%y%m%d}-{token}"


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise IntakeError("DUPLICATE_KEY", f"the key {key!r} appears twice in one object; which value counts would be ambiguous")
        seen[key] = value
    return seen


def read_document(content: bytes, settings: Settings) -> dict[str, Any]:
    """Intake's own checks: size, UTF-8, JSON, an object. Raises IntakeError; stores nothing."""
    if not content:
        raise IntakeError("EMPTY", "the declaration is empty")
    if len(content) > settings.max_declaration_bytes:
        raise IntakeError("TOO_LARGE", f"the declaration has {len(content)} bytes; at most {settings.max_declaration_bytes} are accepted")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IntakeError("NOT_UTF8", f"the declaration is not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start} is invalid") from None
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise IntakeError("JSON_INVALID", f"the declaration is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(data, dict):
        raise IntakeError("OBJECT_EXPECTED", f"the declaration must be a JSON object, not a {type(data).__name__}")
    return data


def _text_field(data: dict[str, Any], *path: str) -> str | None:
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value[:80] if isinstance(value, str) else None


def submit_declaration(
    content: bytes,
    signature: bytes | None,
    attachments: list[IncomingAttachment] | tuple = (),
    *,
    channel: str = "electronic",
    now: datetime | None = None,
    actor: str = "declarant",
    official_id: str | None = None,
) -> Submission:
    """Accept a declaration: fix the submission time, store the exact bytes with their SHA-256, audit it.

    Identical bytes submitted again return the existing application, never a second one. A paper
    declaration is entered by an official of the office it is addressed to (``official_id``), carries
    no electronic signature, and names that official as the actor in the audit chain.
    """
    settings = get_settings()
    if channel not in CHANNELS:
        raise IntakeError("CHANNEL_UNKNOWN", f"channel must be one of {', '.join(CHANNELS)}; {channel!r} given", "channel")
    data = read_document(content, settings)
    if channel == "paper":
        actor = _paper_entry_official(official_id, data, settings)
        if signature or any(a.signature for a in attachments):
            raise IntakeError("PAPER_SIGNED", "a paper declaration is entered by an official and carries no electronic signature; "
                              "submit a signed declaration through the electronic channel instead", "signature")
    elif official_id is not None:
        raise IntakeError("OFFICIAL_NOT_EXPECTED", "only paper declarations are entered by an official (--channel paper)", "official")
    if len(attachments) > settings.max_attachments:
        raise IntakeError("TOO_MANY_ATTACHMENTS", f"{len(attachments)} attachments; at most {settings.max_attachments}", "attachments")
    for index, attachment in enumerate(attachments):
        where = f"attachments[{index}]"
        if not attachment.content:
            raise IntakeError("EMPTY", f"attachment {attachment.filename!r} is empty", where)
        if len(attachment.content) > settings.max_attachment_bytes:
            raise IntakeError("TOO_LARGE", f"attachment {attachment.filename!r} has {len(attachment.content)} bytes; at most {settings.max_attachment_bytes}", where)
    digest = hashlib.sha256(content).hexdigest()

    now = now or utcnow()
    declarant_id = _text_field(data, "declarant", "bin") or _text_field(data, "declarant", "iin")
    try:
        with transaction() as session:
            existing = session.exec(select(Declaration).where(Declaration.content_sha256 == digest)).first()
            if existing is not None:
                return Submission(existing.application_id, existing.submitted_at, str(existing.status), created=False)
            declaration = Declaration(
                application_id=new_application_id(now),
                channel=channel,
                submitted_at=now,
                updated_at=now,
                content=content,
                content_sha256=digest,
                signature=signature or None,
                schema_id=_text_field(data, "schema"),
                customs_office=(_text_field(data, "customs_office") or "")[:20] or None,
                declarant_id=(declarant_id or "")[:20] or None,
                entered_by=actor if channel == "paper" else None,
            )
            session.add(declaration)
            session.flush()
            for position, attachment in enumerate(attachments):
                session.add(Attachment(
                    declaration_id=declaration.id,
                    position=position,
                    filename=attachment.filename[:255],
                    content=attachment.content,
                    content_sha256=hashlib.sha256(attachment.content).hexdigest(),
                    signature=attachment.signature or None,
                ))
            declaration.record_submission(session, actor=actor, details={
                "channel": channel, "sha256": digest, "bytes": len(content), "attachments": len(attachments),
            })
    except IntegrityError:
        existing = find_by_sha256(digest)  # the same bytes raced in from elsewhere
        if existing is None:
            raise
        return Submission(existing.application_id, existing.submitted_at, str(existing.status), created=False)
    return Submission(declaration.application_id, declaration.submitted_at, Status.SUBMITTED.value, created=True)


def _paper_entry_official(official_id: str | None, data: dict[str, Any], settings: Settings) -> str:
    """The official entering a paper declaration must be one of the office the declaration is addressed to."""
    from customs.reference import load_reference

    if not official_id:
        raise IntakeError("OFFICIAL_REQUIRED", "a paper declaration is entered by an official: give --official with the official's id", "official")
    official = load_reference(settings.reference_dir).officials.get(official_id)
    if official is None:
        raise IntakeError("OFFICIAL_UNKNOWN", f"{official_id!r} is not an authorized official (reference/officials.json)", "official")
    office = _text_field(data, "customs_office")
    if official.office != office:
        raise IntakeError("OFFICE_MISMATCH", f"official {official.id} is of customs office {official.office}; the declaration is addressed to office {office}",
                          "customs_office")
    return official.id


def find_by_sha256(digest: str) -> Declaration | None:
    with transaction() as session:
        return session.exec(select(Declaration).where(Declaration.content_sha256 == digest)).first()


def get_declaration(session: Session, key: str) -> Declaration:
    declaration = session.exec(
        select(Declaration).where(or_(Declaration.application_id == key, Declaration.registration_number == key))
    ).first()
    if declaration is None:
        raise DeclarationNotFound(key)
    return declaration


def declaration_status(key: str) -> dict[str, Any]:
    """What a declarant or an official sees: status, number, lane, reasons and the history of transitions."""
    with transaction() as session:
        declaration = get_declaration(session, key)
        events = session.exec(
            select(AuditEvent).where(AuditEvent.application_id == declaration.application_id).order_by(AuditEvent.seq)
        ).all()
        return {
            "application_id": declaration.application_id,
            "status": str(declaration.status),
            "channel": declaration.channel,
            "schema": declaration.schema_id,
            "customs_office": declaration.customs_office,
            "submitted_at": declaration.submitted_at.isoformat(),
            "submitted_at_kz": kz_display(declaration.submitted_at),
            "sha256": declaration.content_sha256,
            "registration_number": declaration.registration_number,
            "registered_at": declaration.registered_at.isoformat() if declaration.registered_at else None,
            "lane": declaration.lane,
            "risk_profiles": declaration.risk_profiles,
            "decision_code": declaration.decision_code,
            "decided_at": declaration.decided_at.isoformat() if declaration.decided_at else None,
            "decided_by": declaration.decided_by,
            "zone": declaration.zone,
            "entered_by": declaration.entered_by,
            "release_due_at": declaration.release_due_at.isoformat() if declaration.release_due_at else None,
            "release_due_at_kz": kz_display(declaration.release_due_at) if declaration.release_due_at else None,
            "release_breached_at": declaration.release_breached_at.isoformat() if declaration.release_breached_at else None,
            "signature_valid": declaration.signature_valid,
            "signers": declaration.signers,
            "reasons": declaration.reasons,
            "history": [
                {
                    "seq": e.seq,
                    "at": e.at.isoformat(),
                    "at_kz": kz_display(e.at),
                    "event": e.event,
                    "from": e.from_status,
                    "to": e.to_status,
                    "actor": e.actor,
                    "reasons": e.reasons,
                    "details": e.details,
                }
                for e in events
            ],
        }


# ----------------------------------------------------------------------------------------------
# The outbox, as operations staff see it


def requeue_failed(*, actor: str, since: datetime | None = None, now: datetime | None = None) -> int:
    """Queue every failed notice again (e.g. after a wrong SMTP password failed a batch); undeliverable ones need an address."""
    from models.outbox import DeliveryAttempt, Notice, NoticeStatus

    now = now or utcnow()
    with transaction() as session:
        query = select(Notice).where(Notice.status == NoticeStatus.FAILED).with_for_update()
        if since is not None:
            query = query.where(Notice.last_attempt_at >= since)
        notices = list(session.exec(query))
        for notice in notices:
            session.add(DeliveryAttempt(notice_id=notice.id, attempt=notice.attempts, at=now, outcome="requeued", detail=f"queued again by {actor} (all failed)"))
            notice.status = NoticeStatus.PENDING
            notice.attempts = 0
            notice.next_attempt_at = now
            notice.last_error = None
            session.add(notice)
        return len(notices)


def list_notices(*, status: str | None = None, application_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    from models.outbox import Notice, NoticeStatus

    if status is not None and status not in {s.value for s in NoticeStatus}:
        raise ValueError(f"status must be one of {', '.join(s.value for s in NoticeStatus)}; {status!r} given")
    with transaction() as session:
        query = select(Notice).order_by(Notice.id.desc()).limit(limit)
        if status:
            query = query.where(Notice.status == status)
        if application_id:
            query = query.where(Notice.application_id == application_id)
        return [
            {
                "id": n.id, "application_id": n.application_id, "kind": str(n.kind), "recipient": n.recipient,
                "language": n.language, "status": str(n.status), "attempts": n.attempts,
                "created_at_kz": kz_display(n.created_at), "next_attempt_at_kz": kz_display(n.next_attempt_at),
                "sent_at_kz": kz_display(n.sent_at), "last_error": n.last_error,
            }
            for n in session.exec(query)
        ]


def requeue_notice(notice_id: int, *, actor: str, recipient: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Send a failed or undeliverable notice again (after the cause was fixed), optionally to a corrected address."""
    from models.outbox import DeliveryAttempt, Notice, NoticeStatus, usable_address

    now = now or utcnow()
    with transaction() as session:
        notice = session.exec(select(Notice).where(Notice.id == notice_id).with_for_update()).first()
        if notice is None:
            raise LookupError(f"no notice with id {notice_id}")
        if notice.status not in (NoticeStatus.FAILED, NoticeStatus.UNDELIVERABLE):
            raise ValueError(f"notice {notice_id} is {notice.status}; only failed or undeliverable notices are queued again")
        if recipient is not None:
            address = usable_address(recipient)
            if address is None:
                raise ValueError(f"{recipient!r} is not a usable e-mail address")
            notice.recipient = address
        if notice.recipient is None:
            raise ValueError(f"notice {notice_id} has no address; give one with --to")
        session.add(DeliveryAttempt(notice_id=notice.id, attempt=notice.attempts, at=now, outcome="requeued",
                                    detail=f"queued again by {actor}" + (f" to {notice.recipient}" if recipient else "")))
        if recipient is not None:  # a legal document goes to another address: that is an act to account for
            from models.audit import append_event

            append_event(session, application_id=notice.application_id, event="notice_redirected", actor=actor[:60], at=now,
                         details={"notice_id": notice.id, "kind": str(notice.kind), "to": notice.recipient})
        notice.status = NoticeStatus.PENDING
        notice.attempts = 0
        notice.next_attempt_at = now
        notice.last_error = None
        session.add(notice)
        return {"id": notice.id, "status": str(notice.status), "recipient": notice.recipient}


def operations_summary(now: datetime | None = None) -> dict[str, Any]:
    """What operations staff look at first: where declarations stand, what waits for officials, marks, the outbox."""
    from sqlalchemy import func

    from models.outbox import Notice, NoticeStatus
    from tasks.officials import open_marks

    settings = get_settings()
    now = now or utcnow()
    with transaction() as session:
        by_status = dict(session.exec(select(Declaration.status, func.count()).group_by(Declaration.status)).all())
        by_lane = {lane or "none": count for lane, count in session.exec(
            select(Declaration.lane, func.count()).where(Declaration.registration_number.is_not(None)).group_by(Declaration.lane)).all()}
        oldest_passing = session.exec(
            select(Declaration).where(Declaration.status.in_((Status.SUBMITTED, Status.SIGNATURES_CHECKED, Status.REGISTERED, Status.LANE_ASSIGNED)))
            .order_by(Declaration.updated_at).limit(1)).first()
        waiting = session.exec(
            select(Declaration).where(Declaration.status == Status.AWAITING_OFFICIAL).order_by(Declaration.release_due_at)
        ).all()
        outbox = dict(session.exec(select(Notice.status, func.count()).group_by(Notice.status)).all())
        awaiting = [
            {"application_id": d.application_id, "registration_number": d.registration_number, "zone": d.zone, "lane": d.lane,
             "due_kz": kz_display(d.release_due_at), "minutes_left": int((d.release_due_at - now).total_seconds() // 60) if d.release_due_at else None,
             "alerted": d.release_alerted_at is not None, "breached": d.release_breached_at is not None}
            for d in waiting
        ]
    marks = open_marks(now=now)
    overdue_minutes = int(settings.release_mark_overdue.total_seconds() // 60)
    from models.printing import PrintRequest, PrintStatus

    with transaction() as session:
        prints_open = session.exec(select(PrintRequest).where(PrintRequest.status == PrintStatus.PENDING).order_by(PrintRequest.due_at)).all()
        print_rows = [{"request_id": p.request_id, "registration_number": p.registration_number, "office": p.office,
                       "minutes_left": int((p.due_at - now).total_seconds() // 60)} for p in prints_open]
    oldest = None
    candidates = [(d["minutes_left"], "awaiting official", d["registration_number"]) for d in awaiting if d["minutes_left"] is not None]
    if oldest_passing is not None:
        oldest = {"application_id": oldest_passing.application_id, "status": str(oldest_passing.status),
                  "resting_minutes": int((now - oldest_passing.updated_at).total_seconds() // 60)}
    return {
        "at_kz": kz_display(now),
        "declarations": {str(s): by_status.get(s, 0) for s in Status},
        "lanes": by_lane,
        "oldest_in_progress": oldest,
        "most_urgent_decision": min(candidates) if candidates else None,
        "print_requests_open": print_rows,
        "failed_runs": _failed_clearance_runs(now),
        "awaiting_official": awaiting,
        "marks_open": len(marks),
        "mark_overdue_minutes": overdue_minutes,
        "marks_overdue": [m for m in marks if m["open_minutes"] >= overdue_minutes],
        "outbox": {str(s): outbox.get(s, 0) for s in NoticeStatus},
    }


def _failed_clearance_runs(now: datetime, hours: int = 24) -> list[dict[str, Any]] | None:
    """Clearance flow runs that failed or crashed in the last ``hours`` (None when no Prefect server answers)."""
    from datetime import timedelta

    from customs.prefect_server import is_healthy, prefect_api, running_api_url

    api_url = running_api_url(get_settings())
    if api_url is None or not is_healthy(api_url):
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
    from prefect.client.schemas.objects import StateType

    with prefect_api(api_url), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["clearance"]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])),
            start_time=FlowRunFilterStartTime(after_=now - timedelta(hours=hours)),
        ), limit=100)
    return [{"flow_run": r.name, "id": str(r.id), "state": r.state.name if r.state else "", "message": (r.state.message or "")[:200] if r.state else ""}
            for r in runs]


def operations_summary_markdown(summary: dict[str, Any]) -> str:
    """The operations summary as the markdown artifact `operations-summary` (the same figures as `customs ops`)."""
    lines = [f"# Operations summary, {summary['at_kz']}", "", "## Declarations by status", "", "| status | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["declarations"].items()]
    lines += ["", "## Registered declarations by lane", "", "| lane | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["lanes"].items()] or ["| - | 0 |"]
    oldest = summary["oldest_in_progress"]
    lines += ["", f"Oldest declaration in progress: {oldest['application_id']} at {oldest['status']} for {oldest['resting_minutes']} min"
              if oldest else "No declaration in progress."]
    lines += ["", f"## Awaiting an official: {len(summary['awaiting_official'])}", ""]
    if summary["awaiting_official"]:
        lines += ["| registration number | zone | lane | due | minutes left | |", "|---|---|---|---|---|---|"]
        lines += [f"| {d['registration_number']} | {d['zone'] or '-'} | {d['lane']} | {d['due_kz']} | {d['minutes_left']} | "
                  f"{'BREACHED' if d['breached'] else ('alerted' if d['alerted'] else '')} |" for d in summary["awaiting_official"][:100]]
    lines += ["", f"## Paper copies open: {len(summary['print_requests_open'])}", ""]
    if summary["print_requests_open"]:
        lines += ["| request | registration number | office | minutes left |", "|---|---|---|---|"]
        lines += [f"| {p['request_id']} | {p['registration_number']} | {p['office']} | {p['minutes_left']} |" for p in summary["print_requests_open"][:100]]
    failed = summary["failed_runs"]
    lines += ["", "## Failed clearance runs (24 h): " + ("unknown" if failed is None else str(len(failed))), ""]
    if failed:
        lines += ["| flow run | state | message |", "|---|---|---|"]
        lines += [f"| {r['flow_run']} | {r['state']} | {r['message'][:120].replace('|', '/')} |" for r in failed[:50]]
    lines += ["", f"Release marks open: {summary['marks_open']}; overdue (over {summary['mark_overdue_minutes']} min): {len(summary['marks_overdue'])}",
              "", "Outbox: " + ", ".join(f"{k} {v}" for k, v in summary["outbox"].items())]
    return "\n".join(lines)
