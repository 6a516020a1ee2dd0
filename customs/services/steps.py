"""The clearance steps as use cases: signatures, registration, risk lane, release.

Each step reads the declaration under its row lock, does nothing when the declaration is not at the
status the step starts from (its effect is already there, or it cannot run yet), otherwise applies its
rule and moves the declaration on through the state machine, which writes the audit event and queues
the declarant's notice in the same transaction. So every step is safe to run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import update
from sqlmodel import Session, select

from customs.core.clock import kz_date, utcnow
from customs.core.db import find_declaration, transaction
from customs.core.reference import load_reference
from customs.core.sent_journal import append, index_of, number_record
from customs.core.settings import Settings, get_settings
from customs.pki.verify import SignedDocument, configured_verifier, verify_documents
from customs.rules.privacy import describe_signature
from customs.rules.registration import format_logical_control, parse_registration_number, registration_number, zone_of
from customs.rules.release import decide_release
from customs.rules.risk import assess_risk
from models.declaration import Attachment, Declaration, RegistrationCounter, ReleaseMark, Status
from models.document import written_declarant
from models.reasons import Reason
from models.reference import ReferenceData


class StepOutcome(BaseModel):
    """Where a declaration stands after a step; ``acted`` is False when the step found its work already done."""

    application_id: str
    status: str
    acted: bool
    registration_number: str | None = None
    lane: str | None = None
    customs_office: str | None = None
    schema_id: str | None = None
    reasons: list[dict[str, Any]] = []
    # What the steps found, for the run's log lines and its artifact (private persons masked: customs.rules.privacy)
    signers: list[str] = []
    risk_profiles: list[str] = []
    zone: str | None = None
    release_due_at: datetime | None = None
    decision_code: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None


def outcome_of(declaration: Declaration, *, acted: bool) -> StepOutcome:
    return StepOutcome(
        application_id=declaration.application_id,
        status=str(declaration.status),
        acted=acted,
        registration_number=declaration.registration_number,
        lane=declaration.lane,
        customs_office=declaration.customs_office,
        schema_id=declaration.schema_id,
        reasons=list(declaration.reasons),
        signers=[describe_signature(s) for s in declaration.signers],
        risk_profiles=list(declaration.risk_profiles),
        zone=declaration.zone,
        release_due_at=declaration.release_due_at,
        decision_code=declaration.decision_code,
        decided_by=declaration.decided_by,
        decided_at=declaration.decided_at,
    )


def current_outcome(application_id: str) -> StepOutcome:
    """Where the declaration stands now (read only)."""
    with transaction() as session:
        return outcome_of(find_declaration(session, application_id), acted=False)


@dataclass(frozen=True)
class StepContext:
    session: Session
    settings: Settings
    reference: ReferenceData
    now: datetime


def run_step(
    application_id: str,
    starts_from: Status,
    act: Callable[[Declaration, StepContext], None],
    *,
    now: datetime | None = None,
) -> StepOutcome:
    """What every step shares: one transaction, the declaration locked, a status guard, the outcome.

    ``act`` runs only when the declaration is at ``starts_from``; it moves the declaration on.
    """
    settings = get_settings()
    reference = load_reference(settings.reference_dir)
    with transaction() as session:
        declaration = find_declaration(session, application_id, lock=True)
        if declaration.status != starts_from:
            return outcome_of(declaration, acted=False)
        act(declaration, StepContext(session, settings, reference, now or utcnow()))
        return outcome_of(declaration, acted=True)


# ----------------------------------------------------------------------------------------------
# Signatures: the crypto runs between two transactions, without holding the lock


def check_signatures(application_id: str, *, now: datetime | None = None) -> StepOutcome:
    """Verify the declaration's and each attachment's signature as of the submission time, and record it."""
    settings = get_settings()
    with transaction() as session:  # read what is to be checked without holding the lock during the crypto
        declaration = find_declaration(session, application_id)
        if declaration.status != Status.SUBMITTED:
            return outcome_of(declaration, acted=False)
        attachments = session.exec(
            select(Attachment).where(Attachment.declaration_id == declaration.id).order_by(Attachment.position)
        ).all()
        documents = [SignedDocument("declaration", "declaration.json", declaration.content, declaration.signature)]
        documents += [SignedDocument(f"attachments[{a.position}]", a.filename, a.content, a.signature) for a in attachments]
        channel, submitted_at, content = declaration.channel, declaration.submitted_at, declaration.content

    now = now or utcnow()
    if channel == "paper":
        verdicts = []
    else:
        verifier = configured_verifier(
            settings.trust_dir,
            settings.crl_dir,
            require_non_repudiation=settings.require_non_repudiation,
            require_crl=settings.require_crl,
        )
        verdicts = verify_documents(verifier, documents, declarant=written_declarant(content), at=submitted_at, now=now)
    reasons = [r for v in verdicts for r in v.reasons]

    def record(declaration: Declaration, step: StepContext) -> None:
        declaration.signature_valid = not reasons if verdicts else None
        declaration.signature_reasons = [r.model_dump() for r in reasons]
        declaration.signers = [v.summary() for v in verdicts]
        declaration.move_to(
            step.session,
            Status.SIGNATURES_CHECKED,
            actor="system",
            at=step.now,
            reasons=reasons,
            details={"documents": len(documents), "verified": len(verdicts), "valid": not reasons, "channel": channel},
        )

    return run_step(application_id, Status.SUBMITTED, record, now=now)  # another run may have got there first


# ----------------------------------------------------------------------------------------------
# Registration (automatic: format and logic control, then the number)


def next_serial(session: Session, office: str, day: date) -> int:
    """Bump the office's counter for the day inside the registering transaction (gapless: a rollback undoes it)."""
    bump = (
        update(RegistrationCounter)
        .where(RegistrationCounter.office == office, RegistrationCounter.day == day)
        .values(last_value=RegistrationCounter.last_value + 1)
        .returning(RegistrationCounter.last_value)
    )
    bumped = session.execute(bump).scalar_one_or_none()
    if bumped is not None:
        return bumped
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(RegistrationCounter).values(office=office, day=day, last_value=0).on_conflict_do_nothing())
    return session.execute(bump).scalar_one()


def raise_counter(session: Session, office: str, day: date, serial: int) -> None:
    """The office's counter for the day at least ``serial`` (a number announced before a restore is never issued again)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(RegistrationCounter).values(office=office, day=day, last_value=0).on_conflict_do_nothing())
    session.execute(
        update(RegistrationCounter)
        .where(RegistrationCounter.office == office, RegistrationCounter.day == day, RegistrationCounter.last_value < serial)
        .values(last_value=serial)
    )


def _announced_number(declaration: Declaration, step: StepContext) -> str | None:
    """The number the sent journal says this declaration was given before the database was restored, when no other
    declaration holds it: registered again, it keeps the number its declarant was told."""
    announced = index_of(step.settings.sent_journal_path).declarations.get(declaration.application_id)
    if announced is None or not announced.number or (parsed := parse_registration_number(announced.number)) is None:
        return None
    holder = step.session.exec(
        select(Declaration.application_id).where(Declaration.registration_number == announced.number)
    ).first()
    if holder is not None and holder != declaration.application_id:
        return None
    raise_counter(step.session, *parsed)
    return announced.number


def _register(declaration: Declaration, step: StepContext) -> None:
    doc, reasons = format_logical_control(declaration.content, step.reference)
    all_reasons = [Reason(**r) for r in declaration.signature_reasons] + reasons
    if all_reasons or doc is None:
        declaration.reasons = [r.model_dump() for r in all_reasons]
        declaration.move_to(
            step.session,
            Status.REGISTRATION_REFUSED,
            actor="system",
            at=step.now,
            reasons=all_reasons,
            details={"rules_failed": len(all_reasons)},
        )
        return
    day = kz_date(step.now)
    number = _announced_number(declaration, step) or registration_number(
        doc.customs_office, day, next_serial(step.session, doc.customs_office, day)
    )
    declaration.registration_number = number
    declaration.registered_at = step.now
    declaration.zone = zone_of(doc, step.reference)
    declaration.release_due_at = step.now + step.settings.release_deadline
    declaration.reasons = []
    declaration.move_to(
        step.session,
        Status.REGISTERED,
        actor="system",
        at=step.now,
        details={
            "registration_number": number,
            "zone": declaration.zone,
            "release_due_at": declaration.release_due_at.isoformat(),
        },
    )


def register_declaration(application_id: str, *, now: datetime | None = None) -> StepOutcome:
    """Register or refuse to register; does nothing when the declaration is already past this step.

    The number, once committed, goes into the sent journal (customs.core.sent_journal)."""
    outcome = run_step(application_id, Status.SIGNATURES_CHECKED, _register, now=now)
    if outcome.acted and outcome.registration_number and (parsed := parse_registration_number(outcome.registration_number)):
        office, day, serial = parsed
        append(
            get_settings().sent_journal_path,
            number_record(application_id, office, day, serial, outcome.registration_number, now or utcnow()),
        )
    return outcome


# ----------------------------------------------------------------------------------------------
# Risk lane


def _registered_document(declaration: Declaration, reference: ReferenceData):
    doc, reasons = format_logical_control(declaration.content, reference)
    if doc is None or reasons:  # registration passed the same control; this means the rules changed under it
        raise RuntimeError(f"{declaration.application_id}: registered declaration no longer passes format control: {reasons}")
    return doc


def _assign_lane(declaration: Declaration, step: StepContext) -> None:
    assessment = assess_risk(_registered_document(declaration, step.reference), step.reference.risk_profiles)
    declaration.lane = assessment.lane
    declaration.risk_profiles = list(assessment.matched_profiles)
    declaration.move_to(
        step.session,
        Status.LANE_ASSIGNED,
        actor="system",
        at=step.now,
        details={"lane": assessment.lane, "risk_profiles": list(assessment.matched_profiles)},
    )


def assign_lane(application_id: str, *, now: datetime | None = None) -> StepOutcome:
    """Lane from the risk profiles: green, yellow (documentary control) or red (inspection)."""
    return run_step(application_id, Status.REGISTERED, _assign_lane, now=now)


# ----------------------------------------------------------------------------------------------
# Release: automatic for the green lane with payments made, otherwise an official decides


def _release_or_hold(declaration: Declaration, step: StepContext) -> None:
    doc, _ = format_logical_control(declaration.content, step.reference)
    decision = decide_release(doc, declaration.lane)
    if decision.automatic:
        declaration.decision_code = decision.decision_code
        declaration.decided_at = step.now
        declaration.decided_by = "system"
        declaration.move_to(
            step.session,
            Status.RELEASED,
            actor="system",
            at=step.now,
            details={"decision_code": decision.decision_code, "automatic": True},
        )
        # The zone's officials affix the release mark after an automatic release.
        step.session.add(
            ReleaseMark(
                application_id=declaration.application_id,
                registration_number=declaration.registration_number,
                office=declaration.customs_office,
                zone=declaration.zone,
                created_at=step.now,
            )
        )
    else:
        declaration.reasons = [r.model_dump() for r in decision.reasons]
        declaration.move_to(
            step.session,
            Status.AWAITING_OFFICIAL,
            actor="system",
            at=step.now,
            reasons=decision.reasons,
            details={"lane": declaration.lane},
        )


def release_or_hold(application_id: str, *, now: datetime | None = None) -> StepOutcome:
    """Automatic release (code 10) of green, paid declarations; the rest wait for an official."""
    return run_step(application_id, Status.LANE_ASSIGNED, _release_or_hold, now=now)
