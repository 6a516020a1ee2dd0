"""Automatic release of low-risk goods (decision code 10), or a wait for an official."""

from __future__ import annotations

from dataclasses import dataclass

from models.document import GoodsDeclaration, Payment
from models.reasons import Reason

RELEASE_PERMITTED = "10"


@dataclass(frozen=True)
class ReleaseDecision:
    automatic: bool
    decision_code: str | None
    reasons: tuple[Reason, ...]  # why it waits for an official


def unpaid_payments(doc: GoodsDeclaration) -> list[tuple[int, Payment]]:
    """The box-47 payments with no proof of payment (``paid`` null), with their index: release waits for them."""
    return [(index, payment) for index, payment in enumerate(doc.payments) if payment.paid is None]


def decide_release(doc: GoodsDeclaration, lane: str) -> ReleaseDecision:
    """Green lane with every box-47 payment paid: automatic release; otherwise an official decides."""
    reasons = []
    if lane != "green":
        control = "documentary control" if lane == "yellow" else "inspection of the goods"
        reasons.append(Reason(code=f"LANE_{lane.upper()}", path="$", message=f"risk lane {lane}: {control} by an official"))
    for index, payment in unpaid_payments(doc):
        reasons.append(
            Reason(
                code="PAYMENT_NOT_PAID",
                path=f"$.payments[{index}].paid",
                message=f"payment {payment.code} of {payment.amount} {payment.currency} is not paid",
                params={"payment": payment.code, "amount": payment.amount, "currency": payment.currency},
            )
        )
    if reasons:
        return ReleaseDecision(automatic=False, decision_code=None, reasons=tuple(reasons))
    return ReleaseDecision(automatic=True, decision_code=RELEASE_PERMITTED, reasons=())
