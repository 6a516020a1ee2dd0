"""Batch recheck: declarations that are stuck, and signatures whose certificates were revoked since.

The rules are plain functions over rows; the scan reads the database in keyset batches of
``recheck_batch_size`` (only the columns it needs, on indexed statuses), so 100,000 declarations take
seconds. What a recheck finds is audited once per finding, so repeated runs report it once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Callable, Iterator

from cryptography import x509
from prefect import task
from sqlmodel import select

from customs.db import transaction
from customs.reference import load_reference
from customs.settings import Settings, get_settings
from customs.timeutil import utcnow
from models.audit import AuditEvent, append_event
from models.declaration import Declaration, Status
from tasks.common import retry_on_database_error
from tasks.officials import check_release_deadlines
from tasks.signature import TrustMaterial

PASSING = (Status.SUBMITTED, Status.SIGNATURES_CHECKED, Status.REGISTERED, Status.LANE_ASSIGNED)
NOT_RELEASED = (Status.SIGNATURES_CHECKED, Status.REGISTERED, Status.LANE_ASSIGNED, Status.AWAITING_OFFICIAL)


@dataclass
class Finding:
    application_id: str
    registration_number: str | None
    status: str
    finding: str  # stuck | release_deadline_passed | signer_revoked_before_submission | signer_revoked_since
    detail: str
    action: str = "reported"  # restarted | restart_failed | breach_recorded | reported | already_reported


# ----------------------------------------------------------------------------------------------
# The rules


def stuck_finding(row: dict[str, Any], now: datetime, stuck_after) -> Finding | None:
    """A declaration resting in a passing status longer than ``stuck_after`` is stuck (its run never started or failed)."""
    if row["status"] not in PASSING or now - row["updated_at"] < stuck_after:
        return None
    minutes = int((now - row["updated_at"]).total_seconds() // 60)
    what = "submitted but its clearance never started" if row["status"] == Status.SUBMITTED else f"stopped at {row['status']}"
    return Finding(row["application_id"], row["registration_number"], str(row["status"]), "stuck", f"{what} {minutes} min ago")


def revocation_findings(row: dict[str, Any], crls: dict[str, x509.CertificateRevocationList]) -> list[Finding]:
    """Signers of a not-yet-released declaration that the current CRLs list as revoked."""
    findings = []
    for summary in row["signers"] or []:
        signer = summary.get("signer") or {}
        crl = crls.get(signer.get("issuer") or "")
        if crl is None or not signer.get("serial"):
            continue
        revoked = crl.get_revoked_certificate_by_serial_number(int(signer["serial"], 16))
        if revoked is None:
            continue
        before = revoked.revocation_date_utc <= row["submitted_at"]
        findings.append(Finding(
            row["application_id"], row["registration_number"], str(row["status"]),
            "signer_revoked_before_submission" if before else "signer_revoked_since",
            f"{summary.get('filename') or summary.get('document')}: certificate {signer['serial']} of {signer.get('subject')} revoked at "
            f"{revoked.revocation_date_utc.isoformat()} ({'before' if before else 'after'} the submission at {row['submitted_at'].isoformat()})",
        ))
    return findings


# ----------------------------------------------------------------------------------------------
# The scan


def _rows(settings: Settings, statuses, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    last_id = 0
    columns = (Declaration.id, Declaration.application_id, Declaration.registration_number, Declaration.status,
               Declaration.updated_at, Declaration.submitted_at, Declaration.signers)
    while True:
        with transaction(settings) as session:
            rows = session.exec(
                select(*columns).where(Declaration.status.in_(statuses), Declaration.id > last_id).order_by(Declaration.id).limit(batch_size)
            ).all()
        if not rows:
            return
        last_id = rows[-1][0]
        yield [dict(zip(("id", "application_id", "registration_number", "status", "updated_at", "submitted_at", "signers"), r)) for r in rows]


def _audit_once(settings: Settings, finding: Finding, now: datetime) -> bool:
    """Record the finding in the audit chain unless the same one was recorded before; True when new."""
    with transaction(settings) as session:
        seen = session.exec(select(AuditEvent.seq).where(
            AuditEvent.application_id == finding.application_id, AuditEvent.event == "recheck_finding",
        )).all()
        if seen:
            details = session.exec(select(AuditEvent.details).where(AuditEvent.seq.in_(seen))).all()
            if any(d.get("finding") == finding.finding and d.get("detail") == finding.detail for d in details):
                return False
        append_event(session, application_id=finding.application_id, event="recheck_finding", actor="batch-recheck", at=now,
                     details={"finding": finding.finding, "detail": finding.detail, "status": finding.status})
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
                else:
                    try:
                        restart(row["application_id"])
                        stuck.action = "restarted"
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
        findings.append(Finding(application_id, None, "awaiting_official", "release_deadline_passed",
                                "no decision by the legal deadline", action="breach_recorded"))
    counts: dict[str, int] = {}
    for finding in findings:
        key = f"{finding.finding}/{finding.action}"
        counts[key] = counts.get(key, 0) + 1
    return {"scanned": scanned, "counts": counts, "findings": [asdict(f) for f in findings]}


@task(name="recheck", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=retry_on_database_error, timeout_seconds=1800)
def recheck(restart_stuck: bool, batch_size: int | None = None) -> dict[str, Any]:
    from prefect.deployments import run_deployment

    def restart(application_id: str) -> None:
        run_deployment("clearance/clearance", parameters={"application_id": application_id, "requested_by": "batch-recheck"},
                       timeout=0, as_subflow=False, flow_run_name=application_id,
                       idempotency_key=f"recheck:{application_id}:{utcnow():%Y%m%d%H%M}")

    return batch_recheck_run(restart=restart if restart_stuck else None, batch_size=batch_size)
