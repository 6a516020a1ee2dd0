"""Officials in the loop: decisions on yellow and red lanes, cancellation of release, release marks,
release deadlines.

The rules (who may act where, what a decision must carry, when the deadline falls) are plain
functions; the use cases apply them to a stored declaration under its row lock in one transaction. A
refused act is written to the audit chain as ``official_action_refused`` (who, what, why) before the
error reaches the caller, so refused attempts leave a trace too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Literal

from prefect import task
from sqlmodel import Session, or_, select

from customs.db import transaction
from customs.reference import load_reference
from customs.settings import Settings, get_settings
from customs.timeutil import kz_display, utcnow
from models.audit import append_event
from models.declaration import Declaration, ReleaseMark, Status
from models.outbox import NoticeKind, queue_notice
from models.reasons import Reason
from models.reference import Official, ReferenceData
from tasks.common import DeclarationNotFound, retry_on_database_error

RELEASE_CODES = {
    "10": "release permitted",
    "11": "release against security for customs payments",
    "12": "release before the checks finish (EAEU CC art. 121), payments made or secured",
}
DECIDED = (Status.RELEASED, Status.RELEASE_REFUSED, Status.RELEASE_CANCELLED)


class OfficialActionRefused(Exception):
    """An official's act that the rules do not allow; it was recorded as a refused attempt."""

    def __init__(self, reason: Reason):
        super().__init__(f"{reason.code}: {reason.message}")
        self.reason = reason

    @property
    def code(self) -> str:
        return self.reason.code

    def as_dict(self) -> dict[str, str]:
        return self.reason.model_dump()


# ----------------------------------------------------------------------------------------------
# The rules


def authority_problem(official: Official | None, official_id: str, *, office: str | None, zone: str | None) -> Reason | None:
    """An official acts only on declarations of its own office and zone of customs control."""
    if official is None:
        return Reason(code="OFFICIAL_UNKNOWN", path="official", message=f"{official_id!r} is not an authorized official (reference/officials.json)")
    if official.office != office:
        return Reason(code="OFFICE_MISMATCH", path="official",
                      message=f"official {official.id} acts for customs office {official.office}; this declaration is of office {office}")
    if zone is not None and official.zone != zone:
        return Reason(code="ZONE_MISMATCH", path="official",
                      message=f"official {official.id} acts in zone {official.zone}; the goods are in zone {zone}")
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
            problems.append(Reason(code="GROUND_UNKNOWN", path=f"grounds[{index}]", message=f"{code!r} is not a ground in reference/release_grounds.json"))
        elif use not in ground.applies_to:
            problems.append(Reason(code="GROUND_NOT_APPLICABLE", path=f"grounds[{index}]", message=f"ground {code} is not a ground for {use}"))
    if len(set(codes)) != len(codes):
        problems.append(Reason(code="GROUND_REPEATED", path="grounds", message="a ground is given twice"))
    return problems


def decision_problems(decision: str, decision_code: str | None, grounds: list[str], reference: ReferenceData) -> list[Reason]:
    if decision == "release":
        if decision_code not in RELEASE_CODES:
            codes = ", ".join(f"{k} ({v})" for k, v in RELEASE_CODES.items())
            return [Reason(code="DECISION_CODE_INVALID", path="decision_code", message=f"release needs a decision code: {codes}; {decision_code!r} given")]
        return []
    if decision == "refuse":
        return grounds_problems(grounds, reference, "refusal")
    return [Reason(code="DECISION_INVALID", path="decision", message=f"the decision is release or refuse; {decision!r} given")]


def release_alert_at(registered_at: datetime, due_at: datetime, fraction: float) -> datetime:
    """When supervisors are alerted: ``fraction`` of the time from registration to the deadline (75%)."""
    return registered_at + (due_at - registered_at) * fraction


def ground_facts(codes: Iterable[str], reference: ReferenceData) -> list[dict[str, Any]]:
    return [{"code": c, "title": dict(reference.grounds[c].title), "legal_basis": reference.grounds[c].legal_basis} for c in codes]


# ----------------------------------------------------------------------------------------------
# Shared pieces


def _lock(session: Session, key: str) -> Declaration:
    declaration = session.exec(
        select(Declaration).where(or_(Declaration.application_id == key, Declaration.registration_number == key)).with_for_update()
    ).first()
    if declaration is None:
        raise DeclarationNotFound(key)
    return declaration


def _refuse(session: Session, application_id: str, official_id: str, action: str, reason: Reason, at: datetime,
            details: dict[str, Any] | None = None) -> OfficialActionRefused:
    append_event(session, application_id=application_id, event="official_action_refused", actor=official_id[:60], at=at,
                 reasons=[reason], details={"action": action, **(details or {})})
    return OfficialActionRefused(reason)


def record_release_breach(session: Session, declaration: Declaration, now: datetime, reference: ReferenceData) -> bool:
    """Record, once, that the release deadline passed without a decision; supervisors are told."""
    if declaration.release_breached_at is not None:
        return False
    declaration.release_breached_at = now
    session.add(declaration)
    event = append_event(session, application_id=declaration.application_id, event="release_deadline_breached", actor="system", at=now,
                         details={"release_due_at": declaration.release_due_at.isoformat(), "zone": declaration.zone,
                                  "registration_number": declaration.registration_number})
    _alert_supervisors(session, declaration, reference, now, event.seq, stage="breach")
    return True


def _alert_supervisors(session: Session, declaration: Declaration, reference: ReferenceData, now: datetime, event_seq: int, *, stage: str) -> int:
    supervisors = reference.supervisors_of(declaration.customs_office or "", declaration.zone) or reference.supervisors_of(declaration.customs_office or "", None)
    minutes_left = int((declaration.release_due_at - now).total_seconds() // 60)
    for supervisor in supervisors:
        queue_notice(
            session, application_id=declaration.application_id, kind=NoticeKind.RELEASE_DEADLINE_ALERT,
            dedup_key=f"release_deadline_{stage}:{declaration.application_id}:{supervisor.id}",
            recipient=supervisor.email, language="ru", at=now, event_seq=event_seq,
            facts={"event_at": now.isoformat(), "stage": stage, "recipient_name": supervisor.name, "zone": declaration.zone, "lane": declaration.lane,
                   "registered_at": declaration.registered_at.isoformat() if declaration.registered_at else None,
                   "deadline_at": declaration.release_due_at.isoformat(), "minutes_left": minutes_left,
                   "waiting_reasons": list(declaration.reasons), "registration_number": declaration.registration_number},
        )
    return len(supervisors)


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
    decision: str,
    official_id: str,
    decision_code: str | None = None,
    grounds: Iterable[str] = (),
    grounds_text: str = "",
    decision_id: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> DecisionResult:
    """Release (with a decision code) or refuse to release (with grounds) a declaration awaiting an official."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    grounds = list(grounds)
    decision_id = decision_id or uuid.uuid4().hex
    if decision == "release" and decision_code is None:
        decision_code = "10"
    refused: OfficialActionRefused | None = None
    attempt = {"decision": decision, "decision_code": decision_code, "grounds": grounds, "decision_id": decision_id}
    with transaction(settings) as session:
        declaration = _lock(session, key)
        if declaration.decision_ref == decision_id:
            return DecisionResult(declaration.application_id, declaration.registration_number, str(declaration.status), decision_id, replay=True)
        official = reference.officials.get(official_id)
        problem = authority_problem(official, official_id, office=declaration.customs_office, zone=declaration.zone)
        if problem is None and declaration.status in DECIDED:
            problem = Reason(code="ALREADY_DECIDED", path="$",
                             message=f"declaration {declaration.registration_number} was already decided: {declaration.status} by "
                                     f"{declaration.decided_by} at {kz_display(declaration.decided_at)}; a decision is given once")
        elif problem is None and declaration.status != Status.AWAITING_OFFICIAL:
            problem = Reason(code="NOT_AWAITING_OFFICIAL", path="$",
                             message=f"declaration {declaration.registration_number or declaration.application_id} is {declaration.status}; "
                                     "only a declaration awaiting an official is decided")
        late = problem is None and declaration.release_due_at is not None and now > declaration.release_due_at
        if late:
            record_release_breach(session, declaration, now, reference)
            if official.role != "supervisor":
                problem = Reason(code="DEADLINE_PASSED", path="$",
                                 message=f"the legal deadline for release or refusal of {declaration.registration_number} passed at "
                                         f"{kz_display(declaration.release_due_at)}; the breach is recorded and the zone's supervisors "
                                         "were told; only a supervisor of the zone may decide now (recorded as a late decision)")
        if problem is None:
            problems = decision_problems(decision, decision_code, grounds, reference)
            problem = problems[0] if len(problems) == 1 else (
                Reason(code=problems[0].code, path=problems[0].path, message="; ".join(p.message for p in problems)) if problems else None)
        if problem is not None:
            refused = _refuse(session, declaration.application_id, official_id, "decide", problem, now, attempt)
        else:
            declaration.decided_at = now
            declaration.decided_by = official.id
            declaration.decision_ref = decision_id
            common = {"official_id": official.id, "official_name": official.name, "decision_id": decision_id,
                      "grounds_text": grounds_text[:2000], "automatic": False, "late": late}
            if decision == "release":
                declaration.decision_code = decision_code
                declaration.reasons = []  # why it waited stays in the audit chain
                declaration.move_to(session, Status.RELEASED, actor=official.id, at=now,
                                    details={**common, "decision_code": decision_code, "decision": RELEASE_CODES[decision_code]})
            else:
                facts = ground_facts(grounds, reference)
                declaration.reasons = [Reason(code=g["code"], path="$", message=g["title"]["en"]).model_dump() for g in facts]
                declaration.move_to(session, Status.RELEASE_REFUSED, actor=official.id, at=now,
                                    reasons=[Reason(**r) for r in declaration.reasons], details={**common, "grounds": facts})
            result = DecisionResult(declaration.application_id, declaration.registration_number, str(declaration.status), decision_id, replay=False)
    if refused is not None:
        raise refused
    return result


def cancel_release(
    key: str,
    *,
    official_id: str,
    grounds: Iterable[str],
    grounds_text: str = "",
    now: datetime | None = None,
    settings: Settings | None = None,
) -> DecisionResult:
    """Cancel a release (automatic or by an official); the declarant gets the cancellation document."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    grounds = list(grounds)
    refused: OfficialActionRefused | None = None
    with transaction(settings) as session:
        declaration = _lock(session, key)
        official = reference.officials.get(official_id)
        problem = authority_problem(official, official_id, office=declaration.customs_office, zone=declaration.zone)
        if problem is None and declaration.status == Status.RELEASE_CANCELLED:
            problem = Reason(code="ALREADY_CANCELLED", path="$", message=f"the release of {declaration.registration_number} was already cancelled")
        elif problem is None and declaration.status != Status.RELEASED:
            problem = Reason(code="NOT_RELEASED", path="$",
                             message=f"only a released declaration can be cancelled; {declaration.registration_number or declaration.application_id} is {declaration.status}")
        if problem is None:
            problems = grounds_problems(grounds, reference, "cancellation")
            problem = Reason(code=problems[0].code, path=problems[0].path, message="; ".join(p.message for p in problems)) if problems else None
        if problem is not None:
            refused = _refuse(session, declaration.application_id, official_id, "cancel_release", problem, now, {"grounds": grounds})
        else:
            facts = ground_facts(grounds, reference)
            declaration.move_to(session, Status.RELEASE_CANCELLED, actor=official.id, at=now,
                                reasons=[Reason(code=g["code"], path="$", message=g["title"]["en"]) for g in facts],
                                details={"official_id": official.id, "official_name": official.name, "grounds": facts,
                                         "grounds_text": grounds_text[:2000], "decision_code": declaration.decision_code,
                                         "released_at": declaration.decided_at.isoformat() if declaration.decided_at else None})
            mark = session.exec(select(ReleaseMark).where(ReleaseMark.application_id == declaration.application_id)).first()
            if mark is not None and mark.affixed_at is None:
                mark.withdrawn_at = now
                session.add(mark)
            result = DecisionResult(declaration.application_id, declaration.registration_number, str(declaration.status), "", replay=False)
    if refused is not None:
        raise refused
    return result


# ----------------------------------------------------------------------------------------------
# Release marks


def open_marks(*, zone: str | None = None, office: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Release marks still to affix, oldest first, with how long each has been waiting."""
    now = now or utcnow()
    with transaction() as session:
        query = select(ReleaseMark).where(ReleaseMark.affixed_at.is_(None), ReleaseMark.withdrawn_at.is_(None)).order_by(ReleaseMark.created_at, ReleaseMark.id)
        if zone:
            query = query.where(ReleaseMark.zone == zone)
        if office:
            query = query.where(ReleaseMark.office == office)
        return [
            {"application_id": m.application_id, "registration_number": m.registration_number, "office": m.office, "zone": m.zone,
             "released_at": m.created_at.isoformat(), "released_at_kz": kz_display(m.created_at),
             "open_minutes": int((now - m.created_at).total_seconds() // 60)}
            for m in session.exec(query)
        ]


def affix_mark(key: str, *, official_id: str, now: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """An official of the zone affixes the release mark after an automatic release."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    refused: OfficialActionRefused | None = None
    with transaction(settings) as session:
        declaration = _lock(session, key)
        mark = session.exec(select(ReleaseMark).where(ReleaseMark.application_id == declaration.application_id).with_for_update()).first()
        official = reference.officials.get(official_id)
        problem = authority_problem(official, official_id, office=declaration.customs_office, zone=mark.zone if mark else declaration.zone)
        if problem is None and mark is None:
            problem = Reason(code="NO_RELEASE_MARK", path="$",
                             message=f"{declaration.registration_number or declaration.application_id} has no release mark to affix (marks follow automatic releases)")
        elif problem is None and mark.affixed_at is not None:
            problem = Reason(code="MARK_ALREADY_AFFIXED", path="$",
                             message=f"the release mark of {declaration.registration_number} was affixed by {mark.affixed_by} at {kz_display(mark.affixed_at)}")
        elif problem is None and mark.withdrawn_at is not None:
            problem = Reason(code="RELEASE_CANCELLED", path="$", message=f"the release of {declaration.registration_number} was cancelled; no mark is affixed")
        if problem is not None:
            refused = _refuse(session, declaration.application_id, official_id, "affix_release_mark", problem, now)
        else:
            mark.affixed_at = now
            mark.affixed_by = official.id
            session.add(mark)
            append_event(session, application_id=declaration.application_id, event="release_mark_affixed", actor=official.id, at=now,
                         details={"zone": mark.zone, "official_name": official.name, "released_at": mark.created_at.isoformat()})
            result = {"application_id": declaration.application_id, "registration_number": declaration.registration_number,
                      "zone": mark.zone, "affixed_at": now.isoformat(), "affixed_by": official.id}
    if refused is not None:
        raise refused
    return result


# ----------------------------------------------------------------------------------------------
# Release deadlines


@dataclass
class DeadlineReport:
    alerted: list[str]
    breached: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"alerted": self.alerted, "breached": self.breached}


def check_release_deadlines(*, now: datetime | None = None, settings: Settings | None = None, application_id: str | None = None) -> DeadlineReport:
    """Alert the zone's supervisors at 75% of the release time; record a breach at 100%. Each once."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    report = DeadlineReport([], [])
    with transaction(settings) as session:
        query = select(Declaration).where(
            Declaration.status == Status.AWAITING_OFFICIAL, Declaration.release_due_at.is_not(None), Declaration.release_breached_at.is_(None)
        )
        if application_id:
            query = query.where(Declaration.application_id == application_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for declaration in session.exec(query):
            if declaration.registered_at is None:
                continue
            alert_at = release_alert_at(declaration.registered_at, declaration.release_due_at, settings.release_alert_fraction)
            if now >= declaration.release_due_at:
                record_release_breach(session, declaration, now, reference)
                report.breached.append(declaration.application_id)
            elif now >= alert_at and declaration.release_alerted_at is None:
                declaration.release_alerted_at = now
                session.add(declaration)
                event = append_event(session, application_id=declaration.application_id, event="release_deadline_alert", actor="system", at=now,
                                     details={"release_due_at": declaration.release_due_at.isoformat(), "zone": declaration.zone})
                _alert_supervisors(session, declaration, reference, now, event.seq, stage="alert")
                report.alerted.append(declaration.application_id)
    return report


# ----------------------------------------------------------------------------------------------
# Prefect tasks


@task(name="official-decision", retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_on_database_error, timeout_seconds=60)
def apply_official_decision(application_id: str, decision: dict[str, Any]) -> dict[str, Any]:
    """Apply the decision an official gave as run input; a refused one is reported back, not raised."""
    try:
        result = decide(application_id, decision=decision["decision"], official_id=decision["official_id"],
                        decision_code=decision.get("decision_code"), grounds=decision.get("grounds") or [],
                        grounds_text=decision.get("grounds_text") or "", decision_id=decision.get("decision_id"))
    except OfficialActionRefused as exc:
        return {"accepted": False, "reason": exc.as_dict()}
    return {"accepted": True, "status": result.status, "replay": result.replay}


@task(name="release-deadlines", retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_on_database_error, timeout_seconds=300)
def release_deadlines(application_id: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    return check_release_deadlines(application_id=application_id, now=now).as_dict()


def waiting_for_official(application_id: str) -> dict[str, Any]:
    """What the waiting flow shows the official, and until when it waits."""
    with transaction() as session:
        declaration = session.exec(select(Declaration).where(Declaration.application_id == application_id)).one()
        return {"status": str(declaration.status), "registration_number": declaration.registration_number,
                "office": declaration.customs_office, "zone": declaration.zone, "lane": declaration.lane,
                "risk_profiles": list(declaration.risk_profiles), "reasons": list(declaration.reasons),
                "release_due_at": declaration.release_due_at, "registered_at": declaration.registered_at}
# ----------------------------------------------------------------------------------------------
# The decision as Prefect run input: the form the UI shows, and what `customs decide` sends.

from prefect.input import RunInput  # noqa: E402
from pydantic import Field  # noqa: E402


class ReleaseDecisionInput(RunInput):
    """An official's decision on a declaration awaiting one (yellow or red lane, or payments pending)."""

    decision: Literal["release", "refuse"] = Field(description="release the goods, or refuse to release them (no default: choose)")
    official_id: str = Field(min_length=3, max_length=40, description="your official id, e.g. KZ-OF-0001 (reference/officials.json)")
    decision_code: Literal["10", "11", "12"] | None = Field(
        "10", description="for a release: 10 release permitted, 11 release against security, 12 release under EAEU CC art. 121")
    grounds: list[str] = Field(default_factory=list, description="for a refusal: one or more ground codes, e.g. DOCUMENTS_NOT_PROVIDED")
    grounds_text: str = Field("", max_length=2000, description="the official's own words on the decision")
    decision_id: str | None = Field(None, max_length=40, description="set by `customs decide`; leave empty in the UI")
