"""Officials in the loop: who may act where, what a decision must carry, when the release deadline alerts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from customs.rules import RefusalKind, Refused
from models.declaration import Status
from models.reasons import Reason
from models.reference import Official, ReferenceData

RELEASE_CODES = {
    "10": "release permitted",
    "11": "release against security for customs payments",
    "12": "release before the checks finish (EAEU CC art. 121), payments made or secured",
}
DECIDED = (Status.RELEASED, Status.RELEASE_REFUSED, Status.RELEASE_CANCELLED)

# What a refused official act is about: who acts (forbidden), or the state of the declaration (conflict);
# any other code is about what the official gave (invalid).
_FORBIDDEN = {"OFFICIAL_UNKNOWN", "OFFICE_MISMATCH", "ZONE_MISMATCH", "ROLE_MISMATCH"}
# An act whose signature does not prove the official: who acts is not shown (forbidden)
_SIGNATURE = {
    "SIGNATURE_MISSING",
    "SIGNATURE_INVALID",
    "DIGEST_MISMATCH",
    "SIGNER_CERT_MISSING",
    "SIGNATURE_ALGORITHM_UNSUPPORTED",
    "WEAK_KEY",
    "WEAK_ALGORITHM",
    "CERT_UNTRUSTED",
    "CERT_EXPIRED",
    "CERT_NOT_YET_VALID",
    "CRL_MISSING",
    "CRL_INVALID",
    "CRL_STALE",
    "CERT_REVOKED",
    "KEY_USAGE",
    "SIGNER_NOT_OFFICIAL",
    "NO_SIGNED_DECISION",
}
_CONFLICT = {
    "ALREADY_DECIDED",
    "NOT_AWAITING_OFFICIAL",
    "DEADLINE_PASSED",
    "ALREADY_CANCELLED",
    "NOT_RELEASED",
    "NO_RELEASE_MARK",
    "MARK_ALREADY_AFFIXED",
    "RELEASE_CANCELLED",
    "ALREADY_PRINTED",
    "ACT_REPLAYED",
}


def refusal_kind(code: str) -> RefusalKind:
    if code in _FORBIDDEN or code in _SIGNATURE:
        return "forbidden"
    if code in _CONFLICT:
        return "conflict"
    return "invalid"


def official_refusal(reason: Reason) -> Refused:
    """An official's act the rules refuse (the caller has audited the attempt)."""
    return Refused(reason, kind=refusal_kind(reason.code))


def authority_problem(official: Official | None, official_id: str, *, office: str | None, zone: str | None) -> Reason | None:
    """An official acts only on declarations of its own office and zone of customs control."""
    if official is None:
        return Reason(
            code="OFFICIAL_UNKNOWN",
            path="official",
            message=f"{official_id!r} is not an authorized official (reference/officials.json)",
        )
    if official.office != office:
        return Reason(
            code="OFFICE_MISMATCH",
            path="official",
            message=f"official {official.id} acts for customs office {official.office}; this declaration is of office {office}",
        )
    if zone is not None and official.zone != zone:
        return Reason(
            code="ZONE_MISMATCH",
            path="official",
            message=f"official {official.id} acts in zone {official.zone}; the goods are in zone {zone}",
        )
    return None


def grounds_problems(codes: Iterable[str], reference: ReferenceData, use: Literal["refusal", "cancellation"]) -> list[Reason]:
    codes = list(codes)
    if not codes:
        allowed = ", ".join(g.code for g in reference.grounds.values() if use in g.applies_to)
        return [Reason(code="GROUNDS_MISSING", path="grounds", message=f"a {use} needs at least one ground: {allowed}")]
    problems = []
    for index, code in enumerate(codes):
        ground = reference.grounds.get(code)
        if ground is None:
            problems.append(
                Reason(
                    code="GROUND_UNKNOWN",
                    path=f"grounds[{index}]",
                    message=f"{code!r} is not a ground in reference/release_grounds.json",
                )
            )
        elif use not in ground.applies_to:
            problems.append(
                Reason(code="GROUND_NOT_APPLICABLE", path=f"grounds[{index}]", message=f"ground {code} is not a ground for {use}")
            )
    if len(set(codes)) != len(codes):
        problems.append(Reason(code="GROUND_REPEATED", path="grounds", message="a ground is given twice"))
    return problems


def decision_problems(decision: str, decision_code: str | None, grounds: list[str], reference: ReferenceData) -> list[Reason]:
    if decision == "release":
        if decision_code not in RELEASE_CODES:
            codes = ", ".join(f"{k} ({v})" for k, v in RELEASE_CODES.items())
            return [
                Reason(
                    code="DECISION_CODE_INVALID",
                    path="decision_code",
                    message=f"release needs a decision code: {codes}; {decision_code!r} given",
                )
            ]
        return []
    if decision == "refuse":
        return grounds_problems(grounds, reference, "refusal")
    return [Reason(code="DECISION_INVALID", path="decision", message=f"the decision is release or refuse; {decision!r} given")]


def release_alert_at(registered_at: datetime, due_at: datetime, fraction: float) -> datetime:
    """When supervisors are alerted: ``fraction`` of the time from registration to the deadline (75%)."""
    return registered_at + (due_at - registered_at) * fraction


def ground_facts(codes: Iterable[str], reference: ReferenceData) -> list[dict[str, Any]]:
    return [
        {"code": c, "title": dict(reference.grounds[c].title), "legal_basis": reference.grounds[c].legal_basis} for c in codes
    ]
