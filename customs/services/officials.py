"""Officials in the loop: decisions on declarations awaiting one, cancellation of release, release marks.

The rules (customs.rules.officials) decide who may act where and what a decision must carry; the use
cases apply them to a stored declaration under its row lock in one transaction. A refused act is
written to the audit chain as ``official_action_refused`` (who, what, why) and then raised as
``Refused``, so refused attempts leave a trace too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from customs.core.clock import kz_display, utcnow
from customs.core.db import find_declaration, transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from customs.rules import Refused, combined
from customs.rules.official_acts import Expected
from customs.rules.officials import (
    DECIDED,
    RELEASE_CODES,
    authority_problem,
    decision_problems,
    ground_facts,
    grounds_problems,
    official_refusal,
)
from customs.services.deadlines import record_release_breach
from customs.services.official_acts import (
    SignedAct,
    VerifiedAct,
    act_checked,
    declaration_subject,
    record_act,
    verify_act,
)
from models.audit import AuditEvent, append_event
from models.declaration import Declaration, ReleaseMark, Status
from models.reasons import Reason


def refuse_official_act(
    session: Session,
    application_id: str,
    office: str | None,
    official_id: str,
    action: str,
    reason: Reason,
    at: datetime,
    details: dict[str, Any] | None = None,
) -> Refused:
    """Audit a refused act (who, what, why) in the caller's transaction; returns the refusal to raise after commit."""
    append_event(
        session,
        application_id=application_id,
        office=office,
        event="official_action_refused",
        actor=official_id[:60],
        at=at,
        reasons=[reason],
        details={"action": action, **(details or {})},
    )
    return official_refusal(reason)


def act_on_declaration(
    session: Session,
    declaration: Declaration,
    checked: VerifiedAct | tuple[Reason, str],
    expected: Expected,
    *,
    now: datetime,
    settings: Settings,
) -> tuple[VerifiedAct | None, Reason | None, str]:
    """The signed act, if it proves its official and says it is this act on this declaration (its number and the
    SHA-256 of its bytes) and was not taken before; else the reason. Returns (act, problem, official id to audit)."""
    subject = {"application_id": declaration.application_id, **declaration_subject(declaration)}
    expected = Expected(
        act=expected.act,
        official_id=expected.official_id,
        subject=subject | (expected.subject or {}),
        choice=expected.choice,
        grounds=expected.grounds,
    )
    return act_checked(session, checked, expected, now=now, settings=settings)


def act_sha256(act: SignedAct) -> str:
    return hashlib.sha256(act.document).hexdigest()


def refused_before(session: Session, application_id: str, decision_id: str) -> Reason | None:
    """The reason a decision with this id was refused for, if it was."""
    events = session.exec(
        select(AuditEvent).where(AuditEvent.application_id == application_id, AuditEvent.event == "official_action_refused")
    ).all()
    for event in events:
        if event.details.get("decision_id") == decision_id and event.reasons:
            return Reason(**event.reasons[0])
    return None


def refused_decisions(application_id: str) -> list[dict[str, Any]]:
    """The decisions on this declaration the rules refused, oldest first: who, what, why (from the audit chain)."""
    with transaction() as session:
        events = session.exec(
            select(AuditEvent)
            .where(AuditEvent.application_id == application_id, AuditEvent.event == "official_action_refused")
            .order_by(AuditEvent.seq)
        ).all()
        return [
            {
                "at": kz_display(e.at),
                "official_id": e.actor,
                "decision": e.details.get("decision") or "-",
                "code": e.reasons[0]["code"] if e.reasons else "-",
                "message": e.reasons[0]["message"] if e.reasons else "",
            }
            for e in events
            if e.details.get("action") == "decide"
        ]


# ----------------------------------------------------------------------------------------------
# Decisions on declarations awaiting an official


@dataclass(frozen=True)
class DecisionResult:
    application_id: str
    registration_number: str | None
    status: str
    decision_id: str
    replay: bool  # the same decision was already applied (e.g. by the CLI before it resumed the flow run)


def decide(
    key: str,
    *,
    act: SignedAct,
    official_id: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> DecisionResult:
    """Release (with a decision code) or refuse to release (with grounds) a declaration awaiting an official, as the
    official's signed act says (choice ``decision`` release/refuse, ``decision_code``; grounds; text). ``official_id``,
    when given, is who the caller authenticated (an API client's official): the act must be theirs.

    The act's nonce is the decision's id: the same signed act given again (a retried call) is a replay, never a
    second decision nor a second refusal in the audit chain."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    checked = verify_act(act, now=now, settings=settings, reference=reference)
    refused: Refused | None = None
    with transaction(settings) as session:
        declaration = find_declaration(session, key, lock=True)
        signed, problem, acting = act_on_declaration(
            session, declaration, checked, Expected(act="decide", official_id=official_id), now=now, settings=settings
        )
        attempt: dict[str, Any] = {"act_sha256": act_sha256(act)}
        if signed is not None:
            decision = signed.act.choice.get("decision", "")
            decision_code = signed.act.choice.get("decision_code") or ("10" if decision == "release" else None)
            grounds = list(signed.act.grounds)
            decision_id = signed.act.nonce
            attempt |= {"decision": decision, "decision_code": decision_code, "grounds": grounds, "decision_id": decision_id}
            if declaration.decision_ref == decision_id:
                return DecisionResult(
                    declaration.application_id,
                    declaration.registration_number,
                    str(declaration.status),
                    decision_id,
                    replay=True,
                )
            earlier = refused_before(session, declaration.application_id, decision_id)
            if earlier is not None:  # the same act, refused before (and audited then): refused again, not audited twice
                raise official_refusal(earlier)
        official = reference.officials.get(acting)
        if problem is None:
            problem = authority_problem(official, acting, office=declaration.customs_office, zone=declaration.zone)
        if problem is None and declaration.status in DECIDED:
            problem = Reason(
                code="ALREADY_DECIDED",
                path="$",
                message=f"declaration {declaration.registration_number} was already decided: {declaration.status} by "
                f"{declaration.decided_by} at {kz_display(declaration.decided_at)}; a decision is given once",
            )
        elif problem is None and declaration.status != Status.AWAITING_OFFICIAL:
            problem = Reason(
                code="NOT_AWAITING_OFFICIAL",
                path="$",
                message=f"declaration {declaration.registration_number or declaration.application_id} is {declaration.status}; "
                "only a declaration awaiting an official is decided",
            )
        late = problem is None and declaration.release_due_at is not None and now > declaration.release_due_at
        if late:
            record_release_breach(session, declaration, now, reference)
            if official.role != "supervisor":
                problem = Reason(
                    code="DEADLINE_PASSED",
                    path="$",
                    message=f"the legal deadline for release or refusal of {declaration.registration_number} passed at "
                    f"{kz_display(declaration.release_due_at)}; the breach is recorded and the zone's supervisors "
                    "were told; only a supervisor of the zone may decide now (recorded as a late decision)",
                )
        if problem is None:
            problem = combined(decision_problems(decision, decision_code, grounds, reference))
        if problem is not None:
            refused = refuse_official_act(
                session, declaration.application_id, declaration.customs_office, acting, "decide", problem, now, attempt
            )
        else:
            record = record_act(
                session, signed, application_id=declaration.application_id, now=now, outcome={"decision": decision}
            )
            declaration.decided_at = now
            declaration.decided_by = official.id
            declaration.decision_ref = decision_id
            common = {
                "official_id": official.id,
                "official_name": official.name,
                "decision_id": decision_id,
                "grounds_text": signed.act.text[:2000],
                "automatic": False,
                "late": late,
                "signed_act": record.reference(),
            }
            if decision == "release":
                declaration.decision_code = decision_code
                declaration.reasons = []  # why it waited stays in the audit chain
                declaration.move_to(
                    session,
                    Status.RELEASED,
                    actor=official.id,
                    at=now,
                    details={**common, "decision_code": decision_code, "decision": RELEASE_CODES[decision_code]},
                )
            else:
                facts = ground_facts(grounds, reference)
                declaration.reasons = [Reason(code=g["code"], path="$", message=g["title"]["en"]).model_dump() for g in facts]
                declaration.move_to(
                    session,
                    Status.RELEASE_REFUSED,
                    actor=official.id,
                    at=now,
                    reasons=[Reason(**r) for r in declaration.reasons],
                    details={**common, "grounds": facts},
                )
            result = DecisionResult(
                declaration.application_id, declaration.registration_number, str(declaration.status), decision_id, replay=False
            )
    if refused is not None:
        raise refused
    return result


def decisions_recorded_for(application_ids: list[str]) -> list[str]:
    """Of these declarations, those an official decided (released, refused, cancelled since): a run still waiting for
    one of them is woken and reads the decision."""
    if not application_ids:
        return []
    with transaction() as session:
        return list(
            session.exec(
                select(Declaration.application_id).where(
                    Declaration.application_id.in_(application_ids),
                    Declaration.status.in_(DECIDED),
                    Declaration.decision_ref.is_not(None),
                )
            ).all()
        )


def refuse_unsigned_resume(application_id: str, *, flow_run_id: str, now: datetime | None = None) -> bool:
    """A run waiting for an official was resumed in Prefect (its API or UI) and no decision is recorded: nothing is
    decided, the attempt is audited as refused (once per resume: ``resume_key``), and the run waits again. Only an
    official's signed act decides (customs decide, the API, the officials' pages). True when it was recorded now."""
    now = now or utcnow()
    with transaction() as session:
        declaration = find_declaration(session, application_id, lock=True)
        if declaration.status != Status.AWAITING_OFFICIAL:
            return False
        reason = Reason(
            code="NO_SIGNED_DECISION",
            path="$",
            message="the waiting clearance run was resumed in Prefect without a decision: nothing is decided. A decision "
            "is an act signed with the official's own NCA key: `customs decide ID release --official OID --key KEY "
            "--cert CERT`, or POST /v1/declarations/{id}/decision with the signed act; the run waits again",
        )
        refuse_official_act(
            session,
            declaration.application_id,
            declaration.customs_office,
            "prefect",
            "resume",
            reason,
            now,
            {"flow_run_id": flow_run_id},
        )
    return True


def waiting_for_official(application_id: str) -> dict[str, Any]:
    """What the waiting flow shows the official, and until when it waits."""
    with transaction() as session:
        declaration = find_declaration(session, application_id)
        return {
            "status": str(declaration.status),
            "registration_number": declaration.registration_number,
            "office": declaration.customs_office,
            "zone": declaration.zone,
            "lane": declaration.lane,
            "risk_profiles": list(declaration.risk_profiles),
            "reasons": list(declaration.reasons),
            "release_due_at": declaration.release_due_at,
            "registered_at": declaration.registered_at,
        }


# ----------------------------------------------------------------------------------------------
# Cancellation of release


def cancel_release(
    key: str,
    *,
    act: SignedAct,
    official_id: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> DecisionResult:
    """Cancel a release (automatic or by an official) as the official's signed act says (its grounds and text); the
    declarant gets the cancellation document."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    checked = verify_act(act, now=now, settings=settings, reference=reference)
    refused: Refused | None = None
    with transaction(settings) as session:
        declaration = find_declaration(session, key, lock=True)
        signed, problem, official_id = act_on_declaration(
            session, declaration, checked, Expected(act="cancel_release", official_id=official_id), now=now, settings=settings
        )
        grounds = list(signed.act.grounds) if signed else []
        grounds_text = signed.act.text if signed else ""
        official = reference.officials.get(official_id)
        if problem is None:
            problem = authority_problem(official, official_id, office=declaration.customs_office, zone=declaration.zone)
        if problem is None and declaration.status == Status.RELEASE_CANCELLED:
            problem = Reason(
                code="ALREADY_CANCELLED",
                path="$",
                message=f"the release of {declaration.registration_number} was already cancelled",
            )
        elif problem is None and declaration.status != Status.RELEASED:
            problem = Reason(
                code="NOT_RELEASED",
                path="$",
                message="only a released declaration can be cancelled; "
                f"{declaration.registration_number or declaration.application_id} is {declaration.status}",
            )
        if problem is None:
            problem = combined(grounds_problems(grounds, reference, "cancellation"))
        if problem is not None:
            refused = refuse_official_act(
                session,
                declaration.application_id,
                declaration.customs_office,
                official_id,
                "cancel_release",
                problem,
                now,
                {"grounds": grounds, "act_sha256": act_sha256(act)},
            )
        else:
            record = record_act(session, signed, application_id=declaration.application_id, now=now)
            facts = ground_facts(grounds, reference)
            declaration.move_to(
                session,
                Status.RELEASE_CANCELLED,
                actor=official.id,
                at=now,
                reasons=[Reason(code=g["code"], path="$", message=g["title"]["en"]) for g in facts],
                details={
                    "official_id": official.id,
                    "official_name": official.name,
                    "grounds": facts,
                    "grounds_text": grounds_text[:2000],
                    "decision_code": declaration.decision_code,
                    "released_at": declaration.decided_at.isoformat() if declaration.decided_at else None,
                    "signed_act": record.reference(),
                },
            )
            mark = session.exec(select(ReleaseMark).where(ReleaseMark.application_id == declaration.application_id)).first()
            if mark is not None and mark.affixed_at is None:
                mark.withdrawn_at = now
                session.add(mark)
            result = DecisionResult(
                declaration.application_id, declaration.registration_number, str(declaration.status), "", replay=False
            )
    if refused is not None:
        raise refused
    return result


# ----------------------------------------------------------------------------------------------
# Release marks


def open_marks(*, zone: str | None = None, office: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Release marks still to affix, oldest first, with how long each has been waiting."""
    now = now or utcnow()
    with transaction() as session:
        query = (
            select(ReleaseMark)
            .where(ReleaseMark.affixed_at.is_(None), ReleaseMark.withdrawn_at.is_(None))
            .order_by(ReleaseMark.created_at, ReleaseMark.id)
        )
        if zone:
            query = query.where(ReleaseMark.zone == zone)
        if office:
            query = query.where(ReleaseMark.office == office)
        return [
            {
                "application_id": m.application_id,
                "registration_number": m.registration_number,
                "office": m.office,
                "zone": m.zone,
                "released_at": m.created_at.isoformat(),
                "released_at_kz": kz_display(m.created_at),
                "open_minutes": int((now - m.created_at).total_seconds() // 60),
            }
            for m in session.exec(query)
        ]


def affix_mark(
    key: str,
    *,
    act: SignedAct,
    official_id: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """An official of the zone affixes the release mark after an automatic release (a signed act)."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    checked = verify_act(act, now=now, settings=settings, reference=reference)
    refused: Refused | None = None
    with transaction(settings) as session:
        declaration = find_declaration(session, key, lock=True)
        mark = session.exec(
            select(ReleaseMark).where(ReleaseMark.application_id == declaration.application_id).with_for_update()
        ).first()
        signed, problem, official_id = act_on_declaration(
            session,
            declaration,
            checked,
            Expected(act="affix_release_mark", official_id=official_id),
            now=now,
            settings=settings,
        )
        official = reference.officials.get(official_id)
        if problem is None:
            problem = authority_problem(
                official, official_id, office=declaration.customs_office, zone=mark.zone if mark else declaration.zone
            )
        if problem is None and mark is None:
            problem = Reason(
                code="NO_RELEASE_MARK",
                path="$",
                message=f"{declaration.registration_number or declaration.application_id} has no release mark to affix "
                "(marks follow automatic releases)",
            )
        elif problem is None and mark.affixed_at is not None:
            problem = Reason(
                code="MARK_ALREADY_AFFIXED",
                path="$",
                message=f"the release mark of {declaration.registration_number} "
                f"was affixed by {mark.affixed_by} at {kz_display(mark.affixed_at)}",
            )
        elif problem is None and mark.withdrawn_at is not None:
            problem = Reason(
                code="RELEASE_CANCELLED",
                path="$",
                message=f"the release of {declaration.registration_number} was cancelled; no mark is affixed",
            )
        if problem is not None:
            refused = refuse_official_act(
                session,
                declaration.application_id,
                declaration.customs_office,
                official_id,
                "affix_release_mark",
                problem,
                now,
                {"act_sha256": act_sha256(act)},
            )
        else:
            record = record_act(session, signed, application_id=declaration.application_id, now=now)
            mark.affixed_at = now
            mark.affixed_by = official.id
            session.add(mark)
            append_event(
                session,
                application_id=declaration.application_id,
                office=declaration.customs_office,
                event="release_mark_affixed",
                actor=official.id,
                at=now,
                details={
                    "zone": mark.zone,
                    "official_name": official.name,
                    "released_at": mark.created_at.isoformat(),
                    "signed_act": record.reference(),
                },
            )
            result = {
                "application_id": declaration.application_id,
                "registration_number": declaration.registration_number,
                "zone": mark.zone,
                "affixed_at": now.isoformat(),
                "affixed_by": official.id,
            }
    if refused is not None:
        raise refused
    return result
