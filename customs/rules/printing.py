"""Paper copies: who may ask, when a request is due, whether a print was late, the SLA figures."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from customs.rules import Refused
from models.declaration import Status
from models.identifiers import identifier_problem

CAN_BE_PRINTED = frozenset(
    {
        Status.REGISTERED,
        Status.LANE_ASSIGNED,
        Status.AWAITING_OFFICIAL,
        Status.RELEASED,
        Status.RELEASE_REFUSED,
        Status.RELEASE_CANCELLED,
    }
)


def minutes_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 60


def nearest_rank(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def sla_figures(rows: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Requests, printed in time, late, open (and of those overdue), median and p95 minutes to print."""
    printed = [r for r in rows if r["printed_at"] is not None]
    minutes = [minutes_between(r["requested_at"], r["printed_at"]) for r in printed]
    open_rows = [r for r in rows if r["printed_at"] is None]
    return {
        "requests": len(rows),
        "printed_in_time": sum(1 for r in printed if not r["late"]),
        "late": sum(1 for r in printed if r["late"]),
        "open": len(open_rows),
        "open_overdue": sum(1 for r in open_rows if now > r["due_at"]),
        "median_minutes": round(statistics.median(minutes), 1) if minutes else None,
        "p95_minutes": round(nearest_rank(minutes, 0.95), 1) if minutes else None,
    }


def requester_problem(requested_by: str | None, declarant_ids: set[str]) -> Refused | None:
    """The applicant asks: the IIN or BIN must be valid and be the declarant's (or a signer's)."""
    if requested_by is None:
        return None
    problem = identifier_problem(requested_by)
    if problem:
        return Refused.because("IIN_BIN_INVALID", f"'{requested_by}' {problem}", "requested_by")
    if requested_by not in declarant_ids:
        return Refused.because(
            "REQUESTER_NOT_APPLICANT",
            f"{requested_by} is neither the declarant nor a signer of this declaration; "
            "only the applicant may ask for its paper copy",
            "requested_by",
        )
    return None


def not_printable(application_id: str, status: str, registration_number: str | None) -> Refused | None:
    """Only a registered declaration has an electronic declaration to print."""
    if registration_number is None or status not in CAN_BE_PRINTED:
        return Refused.because(
            "NOT_REGISTERED",
            f"declaration {application_id} is {status}: only a registered declaration has an electronic declaration to print",
            kind="conflict",
        )
    return None


# --- Which copy renders next (issue 25 part 7) -------------------------------------------------------------


def render_priority(due_at: datetime, goods_items: int, now: datetime, urgent_within: timedelta) -> tuple:
    """Where a copy waiting for a renderer stands (the smallest first): a copy due within ``urgent_within`` (the longest
    a rendering may take) goes first, the nearest deadline first; any other, the fewest goods items first (seconds
    for a few items, minutes for 999), then the nearest deadline. Every copy is due 30 minutes after its request, so
    by deadline alone a 1-item copy waited behind every 999-item one asked a moment before it."""
    if due_at - now <= urgent_within:
        return (0, due_at, goods_items)
    return (1, goods_items, due_at)


@dataclass(frozen=True)
class WaitingCopy:
    priority: tuple
    number: int  # the order they asked in: between equal priorities
    large: bool


def next_to_render(waiting: list[WaitingCopy], free: int, large_rendering: int, processes: int) -> WaitingCopy | None:
    """The copy that starts now, if any: none without a free process; otherwise the first by priority of those allowed
    to start. A large copy may hold every process but one (``processes - 1``, at least one), so a small copy always
    finds one free: a large copy in front that may not start yet does not hold back a small one behind it."""
    if free <= 0:
        return None
    allowed = [w for w in waiting if not w.large or large_rendering < max(1, processes - 1)]
    return min(allowed, key=lambda w: (w.priority, w.number), default=None)
