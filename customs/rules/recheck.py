"""What batch-recheck looks for: declarations that are stuck, and signers the current CRLs list as revoked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from models.declaration import Status

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


def stuck_finding(row: dict[str, Any], now: datetime, stuck_after: timedelta) -> Finding | None:
    """A declaration resting in a passing status longer than ``stuck_after`` is stuck (its run never started or failed)."""
    if row["status"] not in PASSING or now - row["updated_at"] < stuck_after:
        return None
    minutes = int((now - row["updated_at"]).total_seconds() // 60)
    what = "submitted but its clearance never started" if row["status"] == Status.SUBMITTED else f"stopped at {row['status']}"
    return Finding(row["application_id"], row["registration_number"], str(row["status"]), "stuck", f"{what} {minutes} min ago")


MAX_RESTARTS_WITHOUT_PROGRESS = 2


def restart_held(restarts_since: list[dict[str, Any]], row: dict[str, Any]) -> bool:
    """True when batch-recheck already restarted this declaration MAX_RESTARTS_WITHOUT_PROGRESS times at the
    status it still rests in, with nothing changed since (the same ``updated_at``): each run failed the same
    way. Restarting it every 15 minutes would only repeat the failure and its support report (issue 15: a
    signature that kept path building busy was restarted, and reported, again and again), so it waits for a
    person (``customs rerun``, after which the count starts again). ``restarts_since``: the details of the
    restarts recorded since the last re-run by a person."""
    same = [
        r
        for r in restarts_since
        if r.get("status") == str(row["status"]) and r.get("updated_at") == row["updated_at"].isoformat()
    ]
    return len(same) >= MAX_RESTARTS_WITHOUT_PROGRESS


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
        findings.append(
            Finding(
                row["application_id"],
                row["registration_number"],
                str(row["status"]),
                "signer_revoked_before_submission" if before else "signer_revoked_since",
                f"{summary.get('filename') or summary.get('document')}: "
                f"certificate {signer['serial']} of {signer.get('subject')} "
                f"revoked at {revoked.revocation_date_utc.isoformat()} "
                f"({'before' if before else 'after'} the submission at {row['submitted_at'].isoformat()})",
            )
        )
    return findings
