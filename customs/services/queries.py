"""What people read: a declaration's status and history, the operations summary, the audit chain's check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import select

from customs.core.clock import kz_display, utcnow
from customs.core.db import find_declaration, transaction
from customs.core.settings import get_settings
from customs.rules.privacy import mask_private
from customs.services.audit_anchors import latest_anchor
from customs.services.officials import open_marks
from models.audit import AuditEvent, ChainCheck, verify_chain
from models.declaration import Declaration, Status
from models.outbox import Notice, NoticeStatus
from models.printing import PrintRequest, PrintStatus


def declaration_status(key: str) -> dict[str, Any]:
    """What a declarant or an official sees: status, number, lane, reasons and the history of transitions."""
    with transaction() as session:
        declaration = find_declaration(session, key)
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
            "resubmission_of": declaration.resubmission_of,
            "resubmitted_as": session.exec(
                select(Declaration.application_id).where(Declaration.resubmission_of == declaration.application_id)
            ).first(),
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


def operations_summary(now: datetime | None = None, *, failed_runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What operations staff look at first: where declarations stand, what waits for officials, marks, the outbox.

    ``failed_runs``: the clearance flow runs that failed lately, as the caller read them from Prefect
    (``None``: unknown, no Prefect server answered).
    """
    settings = get_settings()
    now = now or utcnow()
    with transaction() as session:
        by_status = dict(session.exec(select(Declaration.status, func.count()).group_by(Declaration.status)).all())
        by_lane = {
            lane or "none": count
            for lane, count in session.exec(
                select(Declaration.lane, func.count())
                .where(Declaration.registration_number.is_not(None))
                .group_by(Declaration.lane)
            ).all()
        }
        oldest_passing = session.exec(
            select(Declaration)
            .where(Declaration.status.in_((Status.SUBMITTED, Status.SIGNATURES_CHECKED, Status.REGISTERED, Status.LANE_ASSIGNED)))
            .order_by(Declaration.updated_at)
            .limit(1)
        ).first()
        waiting = session.exec(
            select(Declaration).where(Declaration.status == Status.AWAITING_OFFICIAL).order_by(Declaration.release_due_at)
        ).all()
        outbox = dict(session.exec(select(Notice.status, func.count()).group_by(Notice.status)).all())
        awaiting = [
            {
                "application_id": d.application_id,
                "registration_number": d.registration_number,
                "zone": d.zone,
                "lane": d.lane,
                "due_kz": kz_display(d.release_due_at),
                "minutes_left": int((d.release_due_at - now).total_seconds() // 60) if d.release_due_at else None,
                "alerted": d.release_alerted_at is not None,
                "breached": d.release_breached_at is not None,
            }
            for d in waiting
        ]
    marks = open_marks(now=now)
    overdue_minutes = int(settings.release_mark_overdue.total_seconds() // 60)
    with transaction() as session:
        prints_open = session.exec(
            select(PrintRequest).where(PrintRequest.status == PrintStatus.PENDING).order_by(PrintRequest.due_at)
        ).all()
        print_rows = [
            {
                "request_id": p.request_id,
                "registration_number": p.registration_number,
                "office": p.office,
                "minutes_left": int((p.due_at - now).total_seconds() // 60),
            }
            for p in prints_open
        ]
    oldest = None
    candidates = [
        (d["minutes_left"], "awaiting official", d["registration_number"]) for d in awaiting if d["minutes_left"] is not None
    ]
    if oldest_passing is not None:
        oldest = {
            "application_id": oldest_passing.application_id,
            "status": str(oldest_passing.status),
            "resting_minutes": int((now - oldest_passing.updated_at).total_seconds() // 60),
        }
    return {
        "at_kz": kz_display(now),
        "declarations": {str(s): by_status.get(s, 0) for s in Status},
        "lanes": by_lane,
        "oldest_in_progress": oldest,
        "most_urgent_decision": min(candidates) if candidates else None,
        "print_requests_open": print_rows,
        "failed_runs": failed_runs,
        "reconciled_runs": reconciled_runs(now),
        "awaiting_official": awaiting,
        "marks_open": len(marks),
        "mark_overdue_minutes": overdue_minutes,
        "marks_overdue": [m for m in marks if m["open_minutes"] >= overdue_minutes],
        "outbox": {str(s): outbox.get(s, 0) for s in NoticeStatus},
        "audit_anchor": latest_anchor(settings),
    }


def reconciled_runs(now: datetime, window: timedelta = timedelta(hours=24), limit: int = 100) -> list[dict[str, Any]]:
    """What the reconciler did to clearance runs in the last ``window`` (from the audit chain), newest first."""
    with transaction() as session:
        events = session.exec(
            select(AuditEvent)
            .where(AuditEvent.event == "clearance_run_reconciled", AuditEvent.at >= now - window)
            .order_by(AuditEvent.seq.desc())
            .limit(limit)
        ).all()
    return [
        {
            "at_kz": kz_display(e.at),
            "application_id": e.application_id,
            "flow_run": e.details.get("flow_run"),
            "state": e.details.get("state"),
            "action": e.details.get("action"),
            "why": e.details.get("why"),
        }
        for e in events
    ]


def operations_summary_markdown(summary: dict[str, Any]) -> str:
    """The operations summary as the markdown artifact `operations-summary` (the same figures as `customs ops`)."""
    lines = [f"# Operations summary, {summary['at_kz']}", "", "## Declarations by status", "", "| status | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["declarations"].items()]
    lines += ["", "## Registered declarations by lane", "", "| lane | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["lanes"].items()] or ["| - | 0 |"]
    oldest = summary["oldest_in_progress"]
    lines += [
        "",
        f"Oldest declaration in progress: {oldest['application_id']} at {oldest['status']} for {oldest['resting_minutes']} min"
        if oldest
        else "No declaration in progress.",
    ]
    lines += ["", f"## Awaiting an official: {len(summary['awaiting_official'])}", ""]
    if summary["awaiting_official"]:
        lines += ["| registration number | zone | lane | due | minutes left | |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {d['registration_number']} | {d['zone'] or '-'} | {d['lane']} | {d['due_kz']} | {d['minutes_left']} | "
            f"{'BREACHED' if d['breached'] else ('alerted' if d['alerted'] else '')} |"
            for d in summary["awaiting_official"][:100]
        ]
    lines += ["", f"## Paper copies open: {len(summary['print_requests_open'])}", ""]
    if summary["print_requests_open"]:
        lines += ["| request | registration number | office | minutes left |", "|---|---|---|---|"]
        lines += [
            f"| {p['request_id']} | {p['registration_number']} | {p['office']} | {p['minutes_left']} |"
            for p in summary["print_requests_open"][:100]
        ]
    failed = summary["failed_runs"]
    lines += ["", "## Failed clearance runs (24 h): " + ("unknown" if failed is None else str(len(failed))), ""]
    if failed:
        lines += ["| flow run | state | message |", "|---|---|---|"]
        lines += [
            f"| {r['flow_run']} | {r['state']} | {mask_private(r['message'])[:120].replace('|', '/')} |" for r in failed[:50]
        ]
    reconciled = summary["reconciled_runs"]
    lines += ["", f"## Clearance runs reconciled (24 h): {len(reconciled)}", ""]
    if reconciled:
        lines += ["| at | application | flow run | state | action | why |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {r['at_kz']} | {r['application_id']} | {r['flow_run']} | {r['state']} | {r['action']} | "
            f"{mask_private(r['why'] or '').replace('|', '/')} |"
            for r in reconciled[:50]
        ]
    lines += [
        "",
        f"Release marks open: {summary['marks_open']}; "
        f"overdue (over {summary['mark_overdue_minutes']} min): {len(summary['marks_overdue'])}",
        "",
        "Outbox: " + ", ".join(f"{k} {v}" for k, v in summary["outbox"].items()),
    ]
    lines += audit_anchor_markdown(summary.get("audit_anchor"))
    return "\n".join(lines)


def audit_anchor_markdown(anchor: dict[str, Any] | None) -> list[str]:
    """The last audit anchor, copied into the artifact so that Prefect's database keeps it too: the heads it
    signed, the signature, and the line exactly as written (its signature can be checked from this copy)."""
    lines = ["", "## Audit anchor", ""]
    if anchor is None:
        return lines + ["No audit anchor yet (`customs audit anchor`; deadline-watch writes one every interval)."]
    if "error" in anchor:
        return lines + [f"The last audit anchor cannot be read: {anchor['error'].replace('|', '/')}"]
    lines += [
        f"Anchor {anchor['anchor']} of {anchor['anchored_at_kz']} in `{anchor['file']}`",
        "",
        "| chain | events | hash of the last event |",
        "|---|---|---|",
    ]
    lines += [f"| {c['chain']} | {c['seq']} | `{c['last_hash']}` |" for c in anchor["chains"]]
    lines += [
        "",
        "| field | value |",
        "|---|---|",
        f"| previous anchor (SHA-256 of its line) | `{anchor['previous']}` |",
        f"| signing key (SHA-256 of the Ed25519 public key) | `{anchor['key']}` |",
        f"| signature (Ed25519, base64) | `{anchor['signature']}` |",
        "",
        "The line as written:",
        "",
        "```json",
        anchor["line"],
        "```",
    ]
    return lines


def owed_clearances(*, older_than: timedelta = timedelta(seconds=5), limit: int = 1000) -> list[str]:
    """Declarations accepted but not yet taken up by a clearance (still ``submitted``), the oldest first: their
    clearance is owed. ``older_than`` leaves the ones just accepted to the start that intake has queued."""
    with transaction() as session:
        return list(
            session.exec(
                select(Declaration.application_id)
                .where(Declaration.status == Status.SUBMITTED, Declaration.submitted_at <= utcnow() - older_than)
                .order_by(Declaration.submitted_at)
                .limit(limit)
            )
        )


# A declaration in one of these has a clearance run somewhere (Scheduled, Running, or Suspended for an official).
UNFINISHED = (
    Status.SUBMITTED,
    Status.SIGNATURES_CHECKED,
    Status.REGISTERED,
    Status.LANE_ASSIGNED,
    Status.AWAITING_OFFICIAL,
)


def unfinished_clearances(*, older_than: timedelta = timedelta(seconds=5), limit: int = 5000) -> list[str]:
    """Declarations whose clearance has not ended (submitted, part-way, waiting for an official), oldest first:
    each should have a clearance run in Prefect. ``older_than`` leaves the ones just accepted to intake's start."""
    with transaction() as session:
        return list(
            session.exec(
                select(Declaration.application_id)
                .where(Declaration.status.in_(UNFINISHED), Declaration.submitted_at <= utcnow() - older_than)
                .order_by(Declaration.submitted_at)
                .limit(limit)
            )
        )


def submitted_since(since: datetime, *, older_than: timedelta = timedelta(seconds=5), limit: int = 5000) -> list[str]:
    """Declarations submitted since ``since`` (whatever their status), oldest first; ``older_than`` leaves the ones just
    accepted to intake's start."""
    with transaction() as session:
        return list(
            session.exec(
                select(Declaration.application_id)
                .where(Declaration.submitted_at >= since, Declaration.submitted_at <= utcnow() - older_than)
                .order_by(Declaration.submitted_at)
                .limit(limit)
            )
        )


def statuses_of(application_ids: list[str]) -> dict[str, str]:
    """The status of each of these declarations (those that are stored)."""
    if not application_ids:
        return {}
    with transaction() as session:
        rows = session.exec(
            select(Declaration.application_id, Declaration.status).where(Declaration.application_id.in_(set(application_ids)))
        ).all()
    return {application_id: str(status) for application_id, status in rows}


def verify_audit_chain() -> ChainCheck:
    """Recompute the audit hash chain; the result names the first broken event."""
    with transaction() as session:
        return verify_chain(session)


@dataclass(frozen=True)
class StatusMismatch:
    """A declaration whose status is not what its last transition in the audit trail made it."""

    application_id: str
    status: str  # as stored (the value, when it is one of the statuses)
    last_transition: str | None  # "from -> to" of its latest transition event, None when it has none
    event_seq: int | None

    def __str__(self) -> str:
        if self.last_transition is None:
            return (
                f"declaration {self.application_id}: status {self.status} in the database, but no transition in the audit trail"
            )
        return (
            f"declaration {self.application_id}: status {self.status} in the database, but its last transition in the audit "
            f"trail (event {self.event_seq}) is {self.last_transition}: the status was changed outside the state machine"
        )


def verify_declaration_statuses(batch: int = 5000) -> list[StatusMismatch]:
    """Every declaration whose status differs from the ``to_status`` of its latest transition event (the status is
    read as stored, so a value that is not a status at all is reported as it is)."""
    names = {status.name: status.value for status in Status}
    stored = cast(Declaration.__table__.c.status, String)
    transition = aliased(AuditEvent)
    last = (
        select(func.max(transition.seq))
        .where(transition.application_id == Declaration.application_id, transition.to_status.is_not(None))
        .correlate(Declaration)
        .scalar_subquery()
    )
    query = (
        select(Declaration.id, Declaration.application_id, stored, AuditEvent.seq, AuditEvent.from_status, AuditEvent.to_status)
        .outerjoin(AuditEvent, AuditEvent.seq == last)
        .where(or_(AuditEvent.seq.is_(None), func.upper(AuditEvent.to_status) != stored))
        .order_by(Declaration.id)
    )
    found: list[StatusMismatch] = []
    last_id = 0
    with transaction() as session:
        while True:
            rows = session.execute(query.where(Declaration.id > last_id).limit(batch)).all()
            for _, application_id, status, seq, from_status, to_status in rows:
                transition = f"{from_status or 'nothing'} -> {to_status}" if seq is not None else None
                found.append(StatusMismatch(application_id, names.get(status, status), transition, seq))
            if len(rows) < batch:
                return found
            last_id = rows[-1][0]
