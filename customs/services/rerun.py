"""Re-running a declaration's clearance: the plan (from which step, refused when the rules say so) and the
audit event that records who asked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import select

from customs.core.clock import utcnow
from customs.core.db import find_declaration, transaction
from customs.rules.rerun import NEXT_STEP, rerun_problem
from models.audit import AuditEvent, append_event
from models.declaration import Status


@dataclass(frozen=True)
class RerunPlan:
    application_id: str
    from_step: str


def plan_rerun(key: str, from_step: str | None = None) -> RerunPlan:
    with transaction() as session:
        declaration = find_declaration(session, key)
        problem = rerun_problem(Status(declaration.status), from_step, declaration.registration_number)
        if problem is not None:
            raise problem
        return RerunPlan(declaration.application_id, NEXT_STEP[Status(declaration.status)])


def record_rerun_event(application_id: str, actor: str, flow_run_id: str, run_count: int, now: datetime | None = None) -> None:
    with transaction() as session:
        declaration = find_declaration(session, application_id)
        append_event(
            session,
            application_id=application_id,
            office=declaration.customs_office,
            event="clearance_rerun",
            actor=actor[:60],
            at=now or utcnow(),
            details={
                "flow_run_id": flow_run_id,
                "run_count": run_count,
                "status": str(declaration.status),
                "from_step": NEXT_STEP.get(Status(declaration.status)),
            },
        )


_RECONCILIATION_KEY = ("flow_run_id", "state", "state_id", "run_count", "action")


def _reconciliations(session, application_id: str) -> list[dict]:
    return list(
        session.exec(
            select(AuditEvent.details).where(
                AuditEvent.application_id == application_id, AuditEvent.event == "clearance_run_reconciled"
            )
        ).all()
    )


def reconciled_before(application_id: str, finding: dict) -> bool:
    """Whether the same action on the same run in the same state is in the declaration's audit chain already."""
    key = {k: finding.get(k) for k in _RECONCILIATION_KEY}
    with transaction() as session:
        return any({k: d.get(k) for k in _RECONCILIATION_KEY} == key for d in _reconciliations(session, application_id))


def reruns_recorded(application_id: str, flow_run_id: str) -> int:
    """How many times the reconciler re-ran this flow run of the declaration (its audit chain says)."""
    with transaction() as session:
        return sum(
            1
            for d in _reconciliations(session, application_id)
            if d.get("flow_run_id") == flow_run_id and d.get("action") == "rerun"
        )


def record_reconciliation(application_id: str, finding: dict, *, now: datetime | None = None) -> bool:
    """Audit what the reconciler did to one of the declaration's clearance runs (re-run, closed, reported), once."""
    key = {k: finding.get(k) for k in _RECONCILIATION_KEY}
    with transaction() as session:
        declaration = find_declaration(session, application_id, lock=True)
        if any({k: d.get(k) for k in _RECONCILIATION_KEY} == key for d in _reconciliations(session, declaration.application_id)):
            return False
        append_event(
            session,
            application_id=declaration.application_id,
            office=declaration.customs_office,
            event="clearance_run_reconciled",
            actor="reconciler",
            at=now or utcnow(),
            details={k: finding.get(k) for k in ("flow_run_id", "flow_run", "state", "state_id", "run_count", "action", "why")},
        )
        return True
