"""Paper copies of electronic declarations: the request (recorded and queued at once at the office that
registered the declaration), the copy rendered in the background, the print queue, printed and handed over,
the 30-minute deadline, the SLA.

Every time is stored (requested, alert, due, printed), so whatever watches the deadlines holds nothing
in memory and can stop and start again.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, select

from customs.core.clock import KZ_TZ, kz_display, kz_local, utcnow
from customs.core.db import find_declaration, transaction
from customs.core.reference import load_reference
from customs.core.settings import Settings, get_settings
from customs.notices.paper_copy import copy_context, render_copy_pdf_apart
from customs.rules import Refused
from customs.rules.official_acts import Expected
from customs.rules.officials import authority_problem
from customs.rules.printing import minutes_between, not_printable, render_priority, requester_problem, sla_figures
from customs.services.authority import UNSIGNED, authority_signer
from customs.services.official_acts import SignedAct, declaration_subject, record_act, verify_act
from customs.services.officials import act_on_declaration, act_sha256, refuse_official_act
from models.audit import append_event
from models.declaration import Declaration, ReleaseMark
from models.document import written_declarant
from models.outbox import Notice, NoticeKind, addressee_of, queue_notice
from models.printing import PrintRequest, PrintStatus
from models.reasons import Reason, one_line
from models.reference import ReferenceData


def goods_items_of(content: bytes) -> int:
    """How many goods items the declaration lists (what makes a copy long to render); 0 when it cannot be read."""
    try:
        goods = json.loads(content.decode("utf-8-sig")).get("goods")
    except (ValueError, AttributeError):
        return 0
    return len(goods) if isinstance(goods, list) else 0


def _applicant_ids(declaration: Declaration) -> set[str]:
    """Who may ask for the copy: the declarant as the document names it, and whoever signed it."""
    ids = set(written_declarant(declaration.content).ids) | ({declaration.declarant_id} if declaration.declarant_id else set())
    for summary in declaration.signers:
        signer = summary.get("signer") or {}
        ids |= {signer[k] for k in ("iin", "bin") if signer.get(k)}
    return ids


@dataclass(frozen=True)
class PrintRequestResult:
    request_id: str
    application_id: str
    registration_number: str
    office: str
    requested_at: datetime
    due_at: datetime
    created: bool  # False: a request for this declaration was already waiting in the queue


def _result(request: PrintRequest, created: bool) -> PrintRequestResult:
    return PrintRequestResult(
        request.request_id,
        request.application_id,
        request.registration_number,
        request.office,
        request.requested_at,
        request.due_at,
        created,
    )


def request_print(
    key: str, *, requested_by: str | None = None, now: datetime | None = None, settings: Settings | None = None
) -> PrintRequestResult:
    """Record the applicant's request and queue it at the office that registered the declaration, at once.

    The copy is rendered afterwards (``render_print_copy``: the `paper-copy` flow run started with the
    request, or the every-minute print-deadlines pass); the 30 minutes run from now either way."""
    settings = settings or get_settings()
    now = now or utcnow()
    with transaction(settings) as session:
        declaration = find_declaration(session, key, lock=True)
        problem = not_printable(declaration.application_id, declaration.status, declaration.registration_number)
        problem = problem or requester_problem(requested_by, _applicant_ids(declaration))
        if problem:
            raise problem
        waiting = session.exec(
            select(PrintRequest).where(
                PrintRequest.application_id == declaration.application_id, PrintRequest.status == PrintStatus.PENDING
            )
        ).first()
        if waiting is not None:  # asked again (or twice at once) while a copy is in the queue: one request
            return _result(waiting, created=False)
        request_id = f"PR{kz_local(now):%y%m%d}-{secrets.token_hex(4).upper()}"
        request = PrintRequest(
            request_id=request_id,
            application_id=declaration.application_id,
            registration_number=declaration.registration_number,
            office=declaration.customs_office,
            requested_at=now,
            requested_by=requested_by,
            alert_at=now + settings.print_alert_after,
            due_at=now + settings.print_deadline,
            declaration_sha256=declaration.content_sha256,
            goods_items=goods_items_of(declaration.content),
        )
        session.add(request)
        event = append_event(
            session,
            application_id=declaration.application_id,
            office=declaration.customs_office,
            event="print_requested",
            actor=requested_by or "declarant",
            at=now,
            details={"request_id": request_id, "due_at": request.due_at.isoformat(), "office": request.office},
        )
        who = addressee_of(declaration.content)
        queue_notice(
            session,
            application_id=declaration.application_id,
            kind=NoticeKind.PRINT_REQUEST_ACCEPTED,
            dedup_key=f"print_request_accepted:{request_id}",
            recipient=who["email"],
            language=who["language"],
            at=now,
            event_seq=event.seq,
            facts={
                "event_at": now.isoformat(),
                "request_id": request_id,
                "requested_at": now.isoformat(),
                "due_at": request.due_at.isoformat(),
                "requested_by": requested_by,
                "registration_number": declaration.registration_number,
            },
        )
        return _result(request, created=True)


@dataclass(frozen=True)
class RenderOutcome:
    request_id: str
    rendered: bool  # False: the copy was there already, or someone else is rendering it
    pdf_sha256: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "rendered": self.rendered,
            "pdf_sha256": self.pdf_sha256,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "note": self.note,
        }


def _claim(session: Session, request_id: str, now: datetime, until: datetime) -> bool:
    """Take the rendering of a copy not yet rendered that nobody holds (or whose holder's time ran out)."""
    claimed = session.execute(
        update(PrintRequest)
        .where(
            PrintRequest.request_id == request_id,
            PrintRequest.pdf.is_(None),
            or_(PrintRequest.render_claimed_until.is_(None), PrintRequest.render_claimed_until < now),
        )
        .values(render_claimed_until=until)
    )
    return claimed.rowcount == 1


def render_print_copy(request_id: str, *, now: datetime | None = None, settings: Settings | None = None) -> RenderOutcome:
    """Render the copy of a recorded request and store it with its SHA-256 (audited as ``copy_rendered``).

    One renderer at a time holds the request (``render_claimed_until``); the rendering runs in one of a few processes
    (customs.notices.paper_copy.CopyRenderers), in its turn: the most urgent, then the fewest goods items, first
    (customs.rules.printing.render_priority), a large copy never in the last free process. A failure is recorded on
    the request and audited, then raised; after ``print_render_attempts`` failures nobody tries again without a
    person (the supervisors' alert at 20 minutes comes all the same)."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    timeout = settings.print_render_timeout
    now = now or utcnow()
    with transaction(settings) as session:
        request = session.exec(select(PrintRequest).where(PrintRequest.request_id == request_id)).first()
        if request is None:
            raise Refused.because("REQUEST_UNKNOWN", f"no print request {request_id!r}", "request_id")
        if request.pdf is not None:
            return RenderOutcome(request_id, False, request.pdf_sha256, len(request.pdf), note="already rendered")
        if request.render_failures >= settings.print_render_attempts:
            return RenderOutcome(request_id, False, note=f"{request.render_failures} renderings failed: {request.render_error}")
        if not _claim(session, request_id, now, now + timeout + timedelta(minutes=1)):
            return RenderOutcome(request_id, False, note="being rendered elsewhere")
        declaration = find_declaration(session, request.application_id)
        mark = session.exec(select(ReleaseMark).where(ReleaseMark.application_id == declaration.application_id)).first()
        signer = authority_signer(settings)  # None: the copy goes out unsigned and says so
        context = copy_context(
            declaration,
            mark,
            reference,
            request.request_id,
            request.requested_at,
            public_url=settings.public_url,
            signed_by=signer.copy_signer if signer else None,
        )
        application_id, office = request.application_id, request.office
        items = request.goods_items if request.goods_items is not None else goods_items_of(declaration.content)
        priority = render_priority(request.due_at, items, now, timeout)

    started = time.perf_counter()
    try:  # in its turn among the copies waiting for a renderer (the most urgent, then the smallest, first)
        pdf = render_copy_pdf_apart(context, timeout.total_seconds(), priority, large=items > settings.print_large_copy_items)
    except Exception as exc:
        problem = one_line(f"{type(exc).__name__}: {exc}", 280)
        with transaction(settings) as session:
            request = session.exec(select(PrintRequest).where(PrintRequest.request_id == request_id).with_for_update()).one()
            request.render_failures += 1
            request.render_error = problem
            request.render_claimed_until = None
            session.add(request)
            append_event(
                session,
                application_id=application_id,
                office=office,
                event="copy_render_failed",
                actor="system",
                at=utcnow(),
                details={"request_id": request_id, "failures": request.render_failures, "error": problem},
            )
        raise
    seconds = round(time.perf_counter() - started, 2)
    # The authority's signature: in the PDF (RSA or EC), or a detached CMS of its bytes kept with the request (GOST)
    signed = signer.sign_copy(pdf) if signer else None
    pdf = signed.pdf if signed else pdf
    digest = hashlib.sha256(pdf).hexdigest()
    with transaction(settings) as session:
        request = session.exec(select(PrintRequest).where(PrintRequest.request_id == request_id).with_for_update()).one()
        if request.pdf is not None:  # a holder whose time ran out finished first: its copy stays
            return RenderOutcome(request_id, False, request.pdf_sha256, len(request.pdf), note="rendered elsewhere meanwhile")
        request.pdf, request.pdf_sha256 = pdf, digest
        request.rendered_at, request.render_seconds, request.render_claimed_until = utcnow(), seconds, None
        request.copy_signature_kind = signed.kind if signed else UNSIGNED
        request.copy_signature = signed.signature if signed else None
        request.copy_signer = signed.signer if signed else None
        session.add(request)
        append_event(
            session,
            application_id=application_id,
            office=office,
            event="copy_rendered",
            actor="system",
            at=request.rendered_at,
            details={
                "request_id": request_id,
                "pdf_sha256": digest,
                "bytes": len(pdf),
                "seconds": seconds,
                "signature": request.copy_signature_kind,
                "signer": request.copy_signer,
            },
        )
    return RenderOutcome(request_id, True, digest, len(pdf), seconds)


def copies_to_render(*, now: datetime | None = None, older_than: timedelta = timedelta(0), limit: int = 20) -> list[str]:
    """Pending requests without their copy, nobody rendering them, not given up on: in the order they render
    (``render_priority``: the most urgent, then the fewest goods items, first)."""
    settings = get_settings()
    now = now or utcnow()
    with transaction(settings) as session:
        query = select(PrintRequest).where(
            PrintRequest.status == PrintStatus.PENDING,
            PrintRequest.pdf.is_(None),
            PrintRequest.requested_at <= now - older_than,
            PrintRequest.render_failures < settings.print_render_attempts,
            or_(PrintRequest.render_claimed_until.is_(None), PrintRequest.render_claimed_until < now),
        )
        waiting = []
        for request in session.exec(query):
            items = request.goods_items  # NULL for requests made before it was kept: counted from the declaration
            if items is None:
                items = goods_items_of(find_declaration(session, request.application_id).content)
            waiting.append((render_priority(request.due_at, items, now, settings.print_render_timeout), request.request_id))
    return [request_id for _, request_id in sorted(waiting)[:limit]]


def copy_is_large(request_id: str) -> bool:
    """Whether the request's copy has more goods items than ``print_large_copy_items`` (minutes to render)."""
    settings = get_settings()
    with transaction(settings) as session:
        request = session.exec(select(PrintRequest).where(PrintRequest.request_id == request_id)).first()
        if request is None:
            raise Refused.because("REQUEST_UNKNOWN", f"no print request {request_id!r}", "request_id")
        items = request.goods_items
        if items is None:
            items = goods_items_of(find_declaration(session, request.application_id).content)
    return items > settings.print_large_copy_items


def print_queue(*, office: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """Pending requests, the most urgent first, with the minutes left (negative: overdue)."""
    now = now or utcnow()
    with transaction() as session:
        query = (
            select(PrintRequest).where(PrintRequest.status == PrintStatus.PENDING).order_by(PrintRequest.due_at, PrintRequest.id)
        )
        if office:
            query = query.where(PrintRequest.office == office)
        return [
            {
                "request_id": r.request_id,
                "registration_number": r.registration_number,
                "application_id": r.application_id,
                "office": r.office,
                "requested_at_kz": kz_display(r.requested_at),
                "due_at_kz": kz_display(r.due_at),
                "minutes_left": math.floor(minutes_between(now, r.due_at)),
                "alerted": r.alerted_at is not None,
                "breached": r.breached_at is not None,
                "copy_ready": r.pdf_sha256 is not None,
                "render_error": r.render_error if r.pdf_sha256 is None else None,
            }
            for r in session.exec(query)
        ]


def _not_ready(request: PrintRequest) -> Refused:
    if request.render_failures:
        state = f"rendering failed {request.render_failures} times ({request.render_error})"
    else:
        state = "it is being rendered (usually seconds; minutes for hundreds of goods items)"
    return Refused.because(
        "COPY_NOT_READY",
        f"the copy of request {request.request_id} is not ready: {state}; requested {kz_display(request.requested_at)}, "
        f"due {kz_display(request.due_at)}",
        "request_id",
        kind="conflict",
    )


def copy_of(request_id: str) -> tuple[PrintRequest, bytes]:
    """The rendered copy; ``COPY_NOT_READY`` while it is being rendered."""
    with transaction() as session:
        request = session.exec(select(PrintRequest).where(PrintRequest.request_id == request_id)).first()
        if request is None:
            raise Refused.because("REQUEST_UNKNOWN", f"no print request {request_id!r}", "request_id")
        if request.pdf is None:
            raise _not_ready(request)
        return request, request.pdf


def print_act_subject(request_id: str) -> dict[str, str]:
    """How an official's act names a print request: the request, and its declaration (``declaration_subject``)."""
    with transaction() as session:
        request = session.exec(select(PrintRequest).where(PrintRequest.request_id == request_id)).first()
        if request is None:
            raise Refused.because("REQUEST_UNKNOWN", f"no print request {request_id!r}", "request_id")
        return declaration_subject(find_declaration(session, request.application_id)) | {"print_request": request_id}


def mark_printed(
    request_id: str,
    *,
    act: SignedAct,
    official_id: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """An official of the office records, by a signed act (``mark_printed``: the request and its declaration), that
    the copy was printed and handed over; after the deadline it is marked late. ``official_id``, when given, is who
    the caller authenticated: the act must be theirs. A refused act is audited and changes nothing."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    checked = verify_act(act, now=now, settings=settings, reference=reference)
    refused: Refused | None = None
    with transaction(settings) as session:
        request = session.exec(select(PrintRequest).where(PrintRequest.request_id == request_id).with_for_update()).first()
        if request is None:
            raise Refused.because("REQUEST_UNKNOWN", f"no print request {request_id!r}", "request_id")
        declaration = find_declaration(session, request.application_id)
        signed, problem, acting = act_on_declaration(
            session,
            declaration,
            checked,
            Expected(act="mark_printed", official_id=official_id, subject={"print_request": request_id}),
            now=now,
            settings=settings,
        )
        official = reference.officials.get(acting)
        if problem is None:
            problem = authority_problem(official, acting, office=request.office, zone=None)
        if problem is None and request.pdf_sha256 is None:
            problem = _not_ready(request).reason
        if problem is None and request.status == PrintStatus.PRINTED:
            problem = Reason(
                code="ALREADY_PRINTED",
                path="request_id",
                message=f"request {request_id} was printed by {request.printed_by} at {kz_display(request.printed_at)}",
            )
        if problem is not None:
            refused = refuse_official_act(
                session,
                request.application_id,
                request.office,
                acting,
                "print",
                problem,
                now,
                {"request_id": request_id, "act_sha256": act_sha256(act)},
            )
        else:
            record = record_act(
                session, signed, application_id=request.application_id, now=now, outcome={"request_id": request_id}
            )
            request.status = PrintStatus.PRINTED
            request.printed_at = now
            request.printed_by = official.id
            request.late = now > request.due_at
            session.add(request)
            minutes = round(minutes_between(request.requested_at, now), 1)
            append_event(
                session,
                application_id=request.application_id,
                office=request.office,
                event="copy_printed",
                actor=official.id,
                at=now,
                details={
                    "request_id": request_id,
                    "late": request.late,
                    "minutes": minutes,
                    "pdf_sha256": request.pdf_sha256,
                    "signed_act": record.reference(),
                },
            )
            result = {
                "request_id": request_id,
                "registration_number": request.registration_number,
                "printed_by": official.id,
                "printed_at": now.isoformat(),
                "minutes": minutes,
                "late": request.late,
                "signed_act": record.id,
            }
    if refused is not None:
        raise refused
    return result


@dataclass
class PrintDeadlineReport:
    alerted: list[str]
    breached: list[str]
    # each request found overdue by this pass, as the event that tells Prefect's automations (tasks/printing.py emits it)
    overdue: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"alerted": self.alerted, "breached": self.breached}


def print_alert_key(stage: str, request_id: str, official_id: str) -> str:
    """The outbox dedup key of a supervisor's print deadline alert: one e-mail per stage, request and person."""
    return f"print_deadline_{stage}:{request_id}:{official_id}"


def alert_office(
    session: Session,
    request: PrintRequest,
    reference: ReferenceData,
    now: datetime,
    event_seq: int | None,
    stage: str,
    *,
    skip_existing: bool = False,
) -> list[str]:
    """Queue the alert of each supervisor of the request's office; returns their e-mail addresses. ``skip_existing``:
    leave out a supervisor already alerted for this stage (the automations' path, after the breach's transaction)."""
    queued = []
    for supervisor in reference.supervisors_of(request.office, None):
        key = print_alert_key(stage, request.request_id, supervisor.id)
        if skip_existing and session.exec(select(Notice.id).where(Notice.dedup_key == key)).first() is not None:
            continue
        queued.append(supervisor.email)
        queue_notice(
            session,
            application_id=request.application_id,
            kind=NoticeKind.PRINT_DEADLINE_ALERT,
            dedup_key=key,
            recipient=supervisor.email,
            language="ru",
            at=now,
            event_seq=event_seq,
            facts={
                "event_at": now.isoformat(),
                "recipient_name": supervisor.name,
                "request_id": request.request_id,
                "requested_at": request.requested_at.isoformat(),
                "due_at": request.due_at.isoformat(),
                "minutes_left": math.floor(minutes_between(now, request.due_at)),
                "stage": stage,
                "registration_number": request.registration_number,
            },
        )
    return queued


def check_print_deadlines(*, now: datetime | None = None, settings: Settings | None = None) -> PrintDeadlineReport:
    """Alert the office's supervisors at 20 minutes, record the breach at 30: from stored times, each once."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    report = PrintDeadlineReport([], [])
    with transaction(settings) as session:
        query = (
            select(PrintRequest)
            .where(PrintRequest.status == PrintStatus.PENDING, PrintRequest.breached_at.is_(None), PrintRequest.alert_at <= now)
            .order_by(PrintRequest.due_at)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for request in session.exec(query):
            if request.alerted_at is None:
                request.alerted_at = now
                event = append_event(
                    session,
                    application_id=request.application_id,
                    office=request.office,
                    event="print_deadline_alert",
                    actor="system",
                    at=now,
                    details={"request_id": request.request_id, "due_at": request.due_at.isoformat(), "office": request.office},
                )
                alert_office(session, request, reference, now, event.seq, "alert")
                report.alerted.append(request.request_id)
            if now >= request.due_at:
                request.breached_at = now
                event = append_event(
                    session,
                    application_id=request.application_id,
                    office=request.office,
                    event="print_deadline_breached",
                    actor="system",
                    at=now,
                    details={"request_id": request.request_id, "due_at": request.due_at.isoformat(), "office": request.office},
                )
                alert_office(session, request, reference, now, event.seq, "breach")
                report.breached.append(request.request_id)
                report.overdue.append(
                    {
                        "request_id": request.request_id,
                        "application_id": request.application_id,
                        "registration_number": request.registration_number,
                        "office": request.office,
                        "requested_at": request.requested_at.isoformat(),
                        "due_at": request.due_at.isoformat(),
                        "breached_at": now.isoformat(),
                    }
                )
            session.add(request)
    return report


def _kz_day_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=KZ_TZ)


def sla_report(*, date_from: date | None = None, date_to: date | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Per office, for requests made from ``date_from`` to ``date_to`` inclusive (Kazakhstan dates)."""
    now = now or utcnow()
    with transaction() as session:
        query = select(PrintRequest)
        if date_from:
            query = query.where(PrintRequest.requested_at >= _kz_day_start(date_from))
        if date_to:
            query = query.where(PrintRequest.requested_at < _kz_day_start(date_to + timedelta(days=1)))
        rows = [
            {"office": r.office, "requested_at": r.requested_at, "printed_at": r.printed_at, "late": r.late, "due_at": r.due_at}
            for r in session.exec(query)
        ]
    offices = sorted({r["office"] for r in rows})
    return {
        "from": date_from.isoformat() if date_from else None,
        "to": date_to.isoformat() if date_to else None,
        "offices": [{"office": office, **sla_figures([r for r in rows if r["office"] == office], now)} for office in offices],
        "total": sla_figures(rows, now),
    }
