"""Re-running a declaration's clearance: an official's signed act (from which step, refused and audited when the
rules say so), and the audit event the clearance run writes of it, naming the act and its official."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import select

from customs.core.clock import utcnow
from customs.core.db import find_declaration, transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from customs.rules import Refused
from customs.rules.official_acts import Expected
from customs.rules.officials import authority_problem
from customs.rules.rerun import NEXT_STEP, rerun_problem
from customs.services.official_acts import SignedAct, record_act, verify_act
from customs.services.officials import act_on_declaration, act_sha256, refuse_official_act
from models.audit import AuditEvent, append_event
from models.declaration import Declaration, Status
from models.official_act import SignedOfficialAct
from models.reasons import Reason


@dataclass(frozen=True)
class RerunPlan:
    application_id: str
    from_step: str
    rerun_act: int | None = None  # the SignedOfficialAct of the re-run, given to the clearance run that does it


def plan_rerun(key: str, from_step: str | None = None) -> RerunPlan:
    """Whether the clearance may run again from ``from_step`` (default: where it stopped), as a preview: nothing is
    recorded (``request_rerun`` takes the official's act)."""
    with transaction() as session:
        declaration = find_declaration(session, key)
        problem = rerun_problem(Status(declaration.status), from_step, declaration.registration_number)
        if problem is not None:
            raise problem
        return RerunPlan(declaration.application_id, NEXT_STEP[Status(declaration.status)])


def rerun_choice(key: str, from_step: str | None = None) -> dict[str, str]:
    """What an official's re-run act chooses: the step named, or the one the declaration stopped before (none
    when its clearance has nothing left to run: the act is then refused, and audited, by ``request_rerun``)."""
    if from_step is not None:
        return {"from_step": from_step}
    with transaction() as session:
        pending = NEXT_STEP[Status(find_declaration(session, key).status)]
    return {"from_step": pending} if pending else {}


def request_rerun(
    key: str,
    *,
    act: SignedAct,
    from_step: str | None = None,
    official_id: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> RerunPlan:
    """An official asks, by a signed act (``rerun``: the declaration; choice ``from_step``), for the clearance to run
    again; the act is kept and its id goes to the clearance run (``rerun_act``), which names it and its official in
    the audit chain. ``from_step``, when given, is what the request says (the act must say the same); else the act's
    choice, or where the declaration stopped. The official acts on declarations of their office and zone. A refused
    act is audited (``official_action_refused``) and changes nothing."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    checked = verify_act(act, now=now, settings=settings, reference=reference)
    refused: Refused | None = None
    with transaction(settings) as session:
        declaration = find_declaration(session, key, lock=True)
        expected = Expected(act="rerun", official_id=official_id, choice={"from_step": from_step} if from_step else None)
        signed, problem, acting = act_on_declaration(session, declaration, checked, expected, now=now, settings=settings)
        step = signed.act.choice.get("from_step") if signed else from_step
        if problem is None:
            problem = authority_problem(
                reference.officials.get(acting), acting, office=declaration.customs_office, zone=declaration.zone
            )
        if problem is None:
            rule = rerun_problem(Status(declaration.status), step, declaration.registration_number)
            problem = rule.reason if rule is not None else None
            kind = rule.kind if rule is not None else None
        else:
            kind = None
        if problem is not None:
            refusal = refuse_official_act(
                session,
                declaration.application_id,
                declaration.customs_office,
                acting,
                "rerun",
                problem,
                now,
                {"from_step": step, "act_sha256": act_sha256(act)},
            )
            refused = Refused(problem, kind=kind) if kind is not None else refusal
        else:
            step = NEXT_STEP[Status(declaration.status)]
            record = record_act(session, signed, application_id=declaration.application_id, now=now, outcome={"from_step": step})
            plan = RerunPlan(declaration.application_id, step, record.id)
    if refused is not None:
        raise refused
    return plan


class RerunActRefused(Refused):
    """A clearance run was given a ``rerun_act`` that is no recorded re-run act of its declaration, or one that
    another run took already: the run records nobody's re-run, and stops."""


def _rerun_act(session, declaration: Declaration, rerun_act: int, flow_run_id: str) -> tuple[SignedOfficialAct, bool]:
    """The recorded re-run act ``rerun_act`` of this declaration, and whether this run recorded it already."""
    row = session.get(SignedOfficialAct, rerun_act)
    if row is None or row.act != "rerun" or row.application_id != declaration.application_id:
        raise RerunActRefused(
            Reason(
                code="RERUN_ACT_UNKNOWN",
                path="rerun_act",
                message=f"{rerun_act!r} is not a recorded re-run act of {declaration.application_id} "
                "(an official asks for a re-run with `customs rerun`, signed)",
            ),
            kind="forbidden",
        )
    taken = [
        details
        for details in session.exec(
            select(AuditEvent.details).where(
                AuditEvent.application_id == declaration.application_id, AuditEvent.event == "clearance_rerun"
            )
        ).all()
        if (details.get("signed_act") or {}).get("id") == rerun_act
    ]
    others = [d.get("flow_run_id") for d in taken if d.get("flow_run_id") != flow_run_id]
    if others:
        raise RerunActRefused(
            Reason(
                code="ACT_REPLAYED",
                path="rerun_act",
                message=f"the re-run act {rerun_act} of {declaration.application_id} was taken by clearance run "
                f"{others[0]}; a signed act serves one re-run",
            ),
            kind="conflict",
        )
    return row, bool(taken)


def record_rerun_event(
    application_id: str, rerun_act: int | None, flow_run_id: str, run_count: int, now: datetime | None = None
) -> None:
    """Audit that the clearance runs again, and who asked: the official of the signed re-run act ``rerun_act`` (the
    first run given it), or the Prefect UI's Retry (``prefect-retry``: the same run again)."""
    with transaction() as session:
        declaration = find_declaration(session, application_id, lock=True)
        details = {
            "flow_run_id": flow_run_id,
            "run_count": run_count,
            "status": str(declaration.status),
            "from_step": NEXT_STEP.get(Status(declaration.status)),
        }
        actor = "prefect-retry"
        if rerun_act is not None:
            row, recorded = _rerun_act(session, declaration, rerun_act, flow_run_id)
            if run_count <= 1:
                if recorded:  # this task again, after its commit: recorded once
                    return
                actor = row.official_id
                details["signed_act"] = row.reference()
        append_event(
            session,
            application_id=declaration.application_id,
            office=declaration.customs_office,
            event="clearance_rerun",
            actor=actor[:60],
            at=now or utcnow(),
            details=details,
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
