"""Automatic registration: format and logic control, with no official, and the registration number.

``format_logical_control`` is the rule (data in, reasons out); ``register_declaration`` applies it to
a stored declaration in one transaction; ``register`` is the Prefect task.
"""

from __future__ import annotations

import json
from datetime import date, datetime

from prefect import task
from sqlalchemy import update

from customs.db import transaction
from customs.reference import load_reference
from customs.settings import get_settings
from customs.timeutil import kz_date, utcnow
from models.declaration import RegistrationCounter, Status
from models.document import GoodsDeclaration, parse_declaration
from models.reasons import Reason
from models.reference import ReferenceData
from tasks.common import StepOutcome, lock_declaration, outcome_of, retry_on_database_error

# ----------------------------------------------------------------------------------------------
# The rule


def decode_document(content: bytes) -> tuple[dict | None, list[Reason]]:
    """The stored bytes as a JSON object (intake already refused anything else; kept defensive)."""
    try:
        data = json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [Reason(code="JSON_INVALID", path="$", message=f"the document is not UTF-8 JSON: {exc}")]
    if not isinstance(data, dict):
        return None, [Reason(code="OBJECT_EXPECTED", path="$", message="the document must be a JSON object")]
    return data, []


def logical_control(doc: GoodsDeclaration, reference: ReferenceData) -> list[Reason]:
    """Rules across fields of a structurally valid declaration; every failure is listed."""
    reasons: list[Reason] = []
    if doc.customs_office not in reference.offices:
        reasons.append(Reason(code="OFFICE_UNKNOWN", path="$.customs_office",
                              message=f"customs office {doc.customs_office} is not a known office empowered to register declarations"))
    elif doc.goods_location is not None and doc.goods_location.zone not in reference.zones_of(doc.customs_office):
        reasons.append(Reason(code="ZONE_UNKNOWN", path="$.goods_location.zone",
                              message=f"zone {doc.goods_location.zone} is not a zone of customs control of office {doc.customs_office} "
                                      f"({', '.join(reference.zones_of(doc.customs_office))})"))
    for index, item in enumerate(doc.goods):
        if item.item_no != index + 1:
            reasons.append(Reason(code="ITEM_NUMBERING", path=f"$.goods[{index}].item_no",
                                  message=f"goods items are numbered 1, 2, 3... in order; item {index + 1} has number {item.item_no}"))
        if item.net_kg > item.gross_kg:
            reasons.append(Reason(code="NET_EXCEEDS_GROSS", path=f"$.goods[{index}].net_kg",
                                  message=f"net weight {item.net_kg} kg exceeds gross weight {item.gross_kg} kg"))
    if doc.totals.items != len(doc.goods):
        reasons.append(Reason(code="TOTALS_MISMATCH", path="$.totals.items",
                              message=f"box 5 says {doc.totals.items} items but the declaration lists {len(doc.goods)}"))
    value_sum = sum((item.customs_value for item in doc.goods), start=0)
    if doc.totals.customs_value != value_sum:
        reasons.append(Reason(code="TOTALS_MISMATCH", path="$.totals.customs_value",
                              message=f"box 12 says {doc.totals.customs_value} but the customs values of the items (box 45) add up to {value_sum}"))
    return reasons


def format_logical_control(content: bytes, reference: ReferenceData) -> tuple[GoodsDeclaration | None, list[Reason]]:
    """Format and logic control of the stored bytes: the parsed document and every failed rule."""
    data, reasons = decode_document(content)
    if data is None:
        return None, reasons
    doc, reasons = parse_declaration(data)
    if doc is None:
        return None, reasons
    return doc, logical_control(doc, reference)


def zone_of(doc: GoodsDeclaration, reference: ReferenceData) -> str | None:
    """Where the goods are: box 30's zone, or the office's first zone when the declaration names none."""
    if doc.goods_location is not None:
        return doc.goods_location.zone
    zones = reference.zones_of(doc.customs_office)
    return zones[0] if zones else None


def registration_number(office: str, day: date, serial: int) -> str:
    """``OOOOO/DDMMYY/NNNNNNN``: office, date of registration in Kazakhstan time, serial per office per day."""
    if not 1 <= serial <= 9_999_999:
        raise ValueError(f"registration serial {serial} is out of range for office {office} on {day}")
    return f"{office}/{day:%d%m%y}/{serial:07d}"


# ----------------------------------------------------------------------------------------------
# The step


def next_serial(session, office: str, day: date) -> int:
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
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(RegistrationCounter).values(office=office, day=day, last_value=0).on_conflict_do_nothing())
    return session.execute(bump).scalar_one()


def register_declaration(application_id: str, *, now: datetime | None = None) -> StepOutcome:
    """Register or refuse to register; does nothing when the declaration is already past this step."""
    settings = get_settings()
    reference = load_reference(settings.reference_dir)
    with transaction() as session:
        declaration = lock_declaration(session, application_id)
        if declaration.status != Status.SIGNATURES_CHECKED:
            return outcome_of(declaration, acted=False)
        now = now or utcnow()
        doc, reasons = format_logical_control(declaration.content, reference)
        all_reasons = [Reason(**r) for r in declaration.signature_reasons] + reasons
        if all_reasons or doc is None:
            declaration.reasons = [r.model_dump() for r in all_reasons]
            declaration.move_to(session, Status.REGISTRATION_REFUSED, actor="system", at=now, reasons=all_reasons,
                                details={"rules_failed": len(all_reasons)})
            return outcome_of(declaration, acted=True)
        serial = next_serial(session, doc.customs_office, kz_date(now))
        number = registration_number(doc.customs_office, kz_date(now), serial)
        declaration.registration_number = number
        declaration.registered_at = now
        declaration.zone = zone_of(doc, reference)
        declaration.release_due_at = now + settings.release_deadline
        declaration.reasons = []
        declaration.move_to(session, Status.REGISTERED, actor="system", at=now,
                            details={"registration_number": number, "zone": declaration.zone,
                                     "release_due_at": declaration.release_due_at.isoformat()})
        return outcome_of(declaration, acted=True)


@task(name="registration", retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_on_database_error, timeout_seconds=60)
def register(application_id: str) -> StepOutcome:
    """Format and logic control; registration number or refusal with every reason."""
    return register_declaration(application_id)


# ----------------------------------------------------------------------------------------------
# The registration deadline (registration is automatic: a late one is a failure of the system)


def check_registration_deadlines(*, now: datetime | None = None, settings=None) -> dict[str, list[str]]:
    """Alert the support service at 75% of the registration time, record the breach at 100%; each once."""
    from sqlmodel import select

    from models.audit import append_event
    from models.declaration import Declaration
    from models.outbox import NoticeKind, queue_notice

    settings = settings or get_settings()
    now = now or utcnow()
    report: dict[str, list[str]] = {"alerted": [], "breached": []}
    alert_after = settings.registration_deadline * settings.registration_alert_fraction
    with transaction(settings) as session:
        query = select(Declaration).where(
            Declaration.status.in_((Status.SUBMITTED, Status.SIGNATURES_CHECKED)),
            Declaration.registration_breached_at.is_(None),
            Declaration.submitted_at <= now - alert_after,
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for declaration in session.exec(query):
            due = declaration.submitted_at + settings.registration_deadline
            stage = "breach" if now >= due else "alert"
            if stage == "alert" and declaration.registration_alerted_at is not None:
                continue
            if stage == "breach":
                declaration.registration_breached_at = now
                report["breached"].append(declaration.application_id)
            else:
                declaration.registration_alerted_at = now
                report["alerted"].append(declaration.application_id)
            session.add(declaration)
            event = append_event(session, application_id=declaration.application_id, actor="system", at=now,
                                 event="registration_deadline_breached" if stage == "breach" else "registration_deadline_alert",
                                 details={"due_at": due.isoformat(), "status": str(declaration.status)})
            queue_notice(session, application_id=declaration.application_id, kind=NoticeKind.REGISTRATION_DEADLINE_ALERT,
                         dedup_key=f"registration_deadline_{stage}:{declaration.application_id}", recipient=settings.support_address,
                         language=settings.support_language, at=now, event_seq=event.seq,
                         facts={"event_at": now.isoformat(), "status": str(declaration.status), "deadline_at": due.isoformat(),
                                "minutes_left": int((due - now).total_seconds() // 60), "stage": stage, "registration_number": None})
    return report
