"""Automatic release of low-risk goods (decision code 10), or a wait for an official."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect import task

from customs.db import transaction
from customs.reference import load_reference
from customs.settings import get_settings
from customs.timeutil import utcnow
from models.declaration import ReleaseMark, Status
from models.document import GoodsDeclaration
from models.reasons import Reason
from tasks.common import StepOutcome, lock_declaration, outcome_of, retry_on_database_error
from tasks.registration import format_logical_control

RELEASE_PERMITTED = "10"


@dataclass(frozen=True)
class ReleaseDecision:
    automatic: bool
    decision_code: str | None
    reasons: tuple[Reason, ...]  # why it waits for an official


def decide_release(doc: GoodsDeclaration, lane: str) -> ReleaseDecision:
    """Green lane with every box-47 payment paid: automatic release; otherwise an official decides."""
    reasons = []
    if lane != "green":
        control = "documentary control" if lane == "yellow" else "inspection of the goods"
        reasons.append(Reason(code=f"LANE_{lane.upper()}", path="$", message=f"risk lane {lane}: {control} by an official"))
    for index, payment in enumerate(doc.payments):
        if payment.paid is None:
            reasons.append(Reason(code="PAYMENT_NOT_PAID", path=f"$.payments[{index}].paid",
                                  message=f"payment {payment.code} of {payment.amount} {payment.currency} is not paid"))
    if reasons:
        return ReleaseDecision(automatic=False, decision_code=None, reasons=tuple(reasons))
    return ReleaseDecision(automatic=True, decision_code=RELEASE_PERMITTED, reasons=())


def release_or_hold(application_id: str, *, now: datetime | None = None) -> StepOutcome:
    settings = get_settings()
    reference = load_reference(settings.reference_dir)
    with transaction() as session:
        declaration = lock_declaration(session, application_id)
        if declaration.status != Status.LANE_ASSIGNED:
            return outcome_of(declaration, acted=False)
        doc, _ = format_logical_control(declaration.content, reference)
        decision = decide_release(doc, declaration.lane)
        now = now or utcnow()
        if decision.automatic:
            declaration.decision_code = decision.decision_code
            declaration.decided_at = now
            declaration.decided_by = "system"
            declaration.move_to(session, Status.RELEASED, actor="system", at=now,
                                details={"decision_code": decision.decision_code, "automatic": True})
            # The zone's officials affix the release mark after an automatic release.
            session.add(ReleaseMark(application_id=declaration.application_id, registration_number=declaration.registration_number,
                                    office=declaration.customs_office, zone=declaration.zone, created_at=now))
        else:
            declaration.reasons = [r.model_dump() for r in decision.reasons]
            declaration.move_to(session, Status.AWAITING_OFFICIAL, actor="system", at=now, reasons=decision.reasons,
                                details={"lane": declaration.lane})
        return outcome_of(declaration, acted=True)


@task(name="release", retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_on_database_error, timeout_seconds=60)
def release(application_id: str) -> StepOutcome:
    """Automatic release (code 10) of green, paid declarations; the rest wait for an official."""
    return release_or_hold(application_id)
