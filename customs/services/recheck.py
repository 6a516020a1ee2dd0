"""Batch recheck: declarations that are stuck, passed release deadlines, and signatures whose certificates
were revoked since (customs.rules.recheck says what counts as which).

The scan reads the database in keyset batches of ``recheck_batch_size`` (only the columns it needs, on
indexed statuses), so 100,000 declarations take seconds. What a recheck finds is audited once per
finding, so repeated runs report it once. Stuck declarations are restarted by the ``restart`` callable
the caller gives (a new clearance run), since starting runs is orchestration's business, not a use case's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlmodel import select

from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from customs.pki.trust import TrustMaterial
from customs.rules.recheck import (
    MAX_RESTARTS_WITHOUT_PROGRESS,
    NOT_RELEASED,
    PASSING,
    Finding,
    restart_held,
    revocation_findings,
    stuck_finding,
)
from customs.services.deadlines import check_release_deadlines
from models.audit import AuditEvent, append_event
from models.declaration import Declaration, Status


def _rows(settings: Settings, statuses, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    last_id = 0
    columns = (
        Declaration.id,
        Declaration.application_id,
        Declaration.registration_number,
        Declaration.status,
        Declaration.updated_at,
        Declaration.submitted_at,
        Declaration.signers,
    )
    while True:
        with transaction(settings) as session:
            rows = session.exec(
                select(*columns)
                .where(Declaration.status.in_(statuses), Declaration.id > last_id)
                .order_by(Declaration.id)
                .limit(batch_size)
            ).all()
        if not rows:
            return
        last_id = rows[-1][0]
        yield [
            dict(
                zip(
                    ("id", "application_id", "registration_number", "status", "updated_at", "submitted_at", "signers"),
                    r,
                    strict=True,
                )
            )
            for r in rows
        ]


def _restarts_since_rerun(settings: Settings, application_id: str) -> list[dict[str, Any]]:
    """The details of batch-recheck's restarts of this declaration since a person last re-ran it."""
    with transaction(settings) as session:
        events = session.exec(
            select(AuditEvent.event, AuditEvent.details)
            .where(
                AuditEvent.application_id == application_id,
                AuditEvent.event.in_(("recheck_restart", "clearance_rerun")),
            )
            .order_by(AuditEvent.seq)
        ).all()
    restarts: list[dict[str, Any]] = []
    for event, details in events:
        if event == "clearance_rerun":
            restarts = []
        else:
            restarts.append(details or {})
    return restarts


def _record_restart(settings: Settings, row: dict[str, Any], now: datetime) -> None:
    with transaction(settings) as session:
        append_event(
            session,
            application_id=row["application_id"],
            office=session.exec(
                select(Declaration.customs_office).where(Declaration.application_id == row["application_id"])
            ).first(),
            event="recheck_restart",
            actor="batch-recheck",
            at=now,
            details={"status": str(row["status"]), "updated_at": row["updated_at"].isoformat()},
        )


def _audit_once(settings: Settings, finding: Finding, now: datetime) -> bool:
    """Record the finding in the audit chain unless the same one was recorded before; True when new."""
    with transaction(settings) as session:
        seen = session.exec(
            select(AuditEvent.seq).where(
                AuditEvent.application_id == finding.application_id,
                AuditEvent.event == "recheck_finding",
            )
        ).all()
        if seen:
            details = session.exec(select(AuditEvent.details).where(AuditEvent.seq.in_(seen))).all()
            if any(d.get("finding") == finding.finding and d.get("detail") == finding.detail for d in details):
                return False
        append_event(
            session,
            application_id=finding.application_id,
            office=session.exec(
                select(Declaration.customs_office).where(Declaration.application_id == finding.application_id)
            ).first(),
            event="recheck_finding",
            actor="batch-recheck",
            at=now,
            details={"finding": finding.finding, "detail": finding.detail, "status": finding.status},
        )
        return True


def batch_recheck_run(
    *,
    restart: Callable[[str], None] | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Find stuck declarations (and restart each with ``restart``), record passed release deadlines,
    and report signers revoked according to the current CRLs. Returns counts and the findings."""
    settings = settings or get_settings()
    now = now or utcnow()
    batch_size = batch_size or settings.recheck_batch_size
    load_reference(settings.reference_dir)  # fail early on broken reference data
    findings: list[Finding] = []
    scanned = 0
    crls = TrustMaterial.load(settings.trust_dir, settings.crl_dir).newest_crls()
    for batch in _rows(settings, PASSING + (Status.AWAITING_OFFICIAL,), batch_size):
        scanned += len(batch)
        for row in batch:
            stuck = stuck_finding(row, now, settings.recheck_stuck_after)
            if stuck is not None:
                if restart is None:
                    stuck.action = "reported"
                elif restart_held(_restarts_since_rerun(settings, row["application_id"]), row):
                    why = (
                        f"restarted {MAX_RESTARTS_WITHOUT_PROGRESS} times at {row['status']} with nothing changed since "
                        f"{row['updated_at'].isoformat()}: not restarted again until a person re-runs it (customs rerun)"
                    )
                    stuck.detail += f"; {why}"
                    held = Finding(row["application_id"], row["registration_number"], str(row["status"]), "restart_held", why)
                    stuck.action = "held" if _audit_once(settings, held, now) else "already_held"
                else:
                    try:
                        restart(row["application_id"])
                        stuck.action = "restarted"
                        _record_restart(settings, row, now)
                    except Exception as exc:  # Prefect down: the next recheck tries again
                        stuck.action = "restart_failed"
                        stuck.detail += f"; restart failed: {type(exc).__name__}: {exc}"
                findings.append(stuck)
            if row["status"] in NOT_RELEASED and crls:
                for finding in revocation_findings(row, crls):
                    finding.action = "reported" if _audit_once(settings, finding, now) else "already_reported"
                    findings.append(finding)
    deadlines = check_release_deadlines(now=now, settings=settings)
    for application_id in deadlines.breached:
        findings.append(
            Finding(
                application_id,
                None,
                "awaiting_official",
                "release_deadline_passed",
                "no decision by the legal deadline",
                action="breach_recorded",
            )
        )
    counts: dict[str, int] = {}
    for finding in findings:
        key = f"{finding.finding}/{finding.action}"
        counts[key] = counts.get(key, 0) + 1
    return {
        "scanned": scanned,
        "counts": counts,
        "findings": [asdict(f) for f in findings],
        "breaches": deadlines.breaches,  # told to Prefect's automations as events (tasks/recheck.py)
    }
