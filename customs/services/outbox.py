"""The outbox dispatcher: claim due notices, send them (customs.notices.delivery), record each attempt; and
the outbox as operations staff handle it (list, requeue).

Delivery is at least once. A pass first *claims* its notices in a short transaction (attempt counted,
next attempt pushed a lease ahead, so no other dispatcher takes them), then sends, then marks each
notice in its own transaction right after the server answered it (retried for a few seconds when the
database does not answer). The same transaction confirms that the pass still holds the next notice
(renewing its lease): a pass that stalled past its lease never sends a notice another pass took over.

A crash between the server's acceptance and the mark (a "lost mark") leaves the notice claimed; when the
lease runs out it is sent again, as the same message with the same Message-ID (see
customs.notices.render). The claim that takes it again finds that attempt without a recorded outcome and
records it: a delivery attempt ``unknown`` and the audit event ``notice_outcome_lost``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, TypeVar

from sqlalchemy import func
from sqlmodel import select

from customs.core.clock import kz_display, utcnow
from customs.core.db import is_transient_database_error, transaction
from customs.core.reference import ReferenceDataError, load_reference
from customs.core.sent_journal import append, index_of, notice_record
from customs.core.settings import Settings, get_settings
from customs.notices.delivery import PERMANENT, SENT, TEMPORARY, SendResult, Transport, backoff, transport_for
from customs.notices.render import (
    DECISION_FILE,
    DECISION_SIGNATURE_FILE,
    DeclarationFacts,
    build_message,
    build_system_message,
    decision_json_of,
)
from customs.rules import Refused
from customs.rules.official_acts import Expected
from customs.rules.officials import authority_problem
from customs.services.authority import authority_signer
from customs.services.official_acts import SignedAct, act_checked, record_act, verify_act
from customs.services.officials import act_sha256, refuse_official_act
from customs.services.support import withdraw_notice
from models.audit import append_event
from models.declaration import Declaration
from models.official_act import SignedOfficialAct
from models.outbox import (
    DECISION_KINDS,
    SYSTEM_KINDS,
    DeliveryAttempt,
    Notice,
    NoticeAttachment,
    NoticeKind,
    NoticeStatus,
    usable_address,
)
from models.reasons import Reason

log = logging.getLogger(__name__)
T = TypeVar("T")


# ----------------------------------------------------------------------------------------------
# A pass of the dispatcher


@dataclass
class Claimed:
    notice: Notice
    declaration: DeclarationFacts | None
    attachments: list[tuple[str, str, bytes]]


@dataclass
class DispatchReport:
    claimed: int = 0
    outcomes: Counter = field(default_factory=Counter)  # sent / retry / failed / stale / put_back
    errors: list[str] = field(default_factory=list)
    deferred: str | None = None  # why nothing was tried (a clearance's pass while the SMTP server is away)
    # Why the mail server took nothing this pass (no transport, a refused session, or every attempt failing
    # temporarily with none sent or refused): the notices wait for the next pass; `customs outbox dispatch` exits 5.
    unavailable: str | None = None

    @property
    def sent(self) -> int:
        return self.outcomes["sent"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            **{k: self.outcomes[k] for k in ("sent", "retry", "failed", "stale", "put_back")},
            "errors": self.errors[:20],
            **({"deferred": self.deferred} if self.deferred else {}),
        }


# When the SMTP server last failed as a whole (connection refused, time-out), per process: clearance runs
# leave their notices to outbox-dispatch until ``smtp_pause_after_failure`` has passed, so a hung server costs
# a clearance at most one short time-out per pause, never one per notice.
_smtp_away_until: dict[tuple[str | None, int | None], float] = {}


def smtp_away_for(settings: Settings) -> float:
    """Seconds clearance runs still leave their notices to outbox-dispatch (0: they send)."""
    return max(0.0, _smtp_away_until.get((settings.smtp_host, settings.smtp_port), 0.0) - time.monotonic())


UNKNOWN = "unknown"  # an attempt whose outcome was never recorded (its dispatcher stopped): maybe delivered


def _lost_outcomes(session, notices: list[Notice]) -> list[Notice]:
    """Notices whose last attempt has no recorded outcome: its pass stopped after claiming it, perhaps after the
    server had accepted the message. Rows older than the attempt's claim (before a requeue) do not count."""
    tried = [n for n in notices if n.attempts > 0 and n.last_attempt_at is not None]
    if not tried:
        return []
    recorded = {
        (notice_id, attempt, at)
        for notice_id, attempt, at in session.exec(
            select(DeliveryAttempt.notice_id, DeliveryAttempt.attempt, DeliveryAttempt.at).where(
                DeliveryAttempt.notice_id.in_([n.id for n in tried])
            )
        )
    }
    lost = []
    for notice in tried:
        if not any(i == notice.id and a == notice.attempts and at >= notice.last_attempt_at for i, a, at in recorded):
            lost.append(notice)
    return lost


def _record_lost(session, settings: Settings, notice: Notice, now: datetime, then: str) -> None:
    """Write down that attempt ``notice.attempts`` has no outcome, and what happens now (``then``): a delivery
    attempt ``unknown`` and, in the declaration's audit chain, ``notice_outcome_lost``."""
    message_id = f"<notice-{notice.uid}@{settings.mail_domain}>"
    detail = (
        f"no outcome recorded: the dispatcher stopped during attempt {notice.attempts} (claimed "
        f"{notice.last_attempt_at:%Y-%m-%d %H:%M:%S} UTC), perhaps after the server accepted the message; {then}"
    )
    session.add(DeliveryAttempt(notice_id=notice.id, attempt=notice.attempts, at=now, outcome=UNKNOWN, detail=detail[:2000]))
    append_event(
        session,
        application_id=notice.application_id,
        office=session.exec(
            select(Declaration.customs_office).where(Declaration.application_id == notice.application_id)
        ).first(),
        event="notice_outcome_lost",
        actor="outbox",
        at=now,
        details={
            "notice_id": notice.id,
            "kind": str(notice.kind),
            "attempt": notice.attempts,
            "message_id": message_id,
            "then": then,
        },
    )
    log.warning("notice %s (%s, %s): %s", notice.id, notice.kind, message_id, detail)


JOURNAL_HAS_IT = "the sent journal holds it (the server had accepted it): marked sent, not sent again"


def claim_due(settings: Settings, now: datetime, limit: int, application_id: str | None = None) -> list[Claimed]:
    """Reserve up to ``limit`` due notices for this pass (PostgreSQL: SKIP LOCKED lets dispatchers share the work)."""
    with transaction(settings) as session:
        query = select(Notice).where(Notice.status == NoticeStatus.PENDING, Notice.next_attempt_at <= now)
        if application_id is not None:
            query = query.where(Notice.application_id == application_id)
        query = query.order_by(Notice.next_attempt_at, Notice.id).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        notices = []
        found = session.exec(query).all()
        lost = {n.id for n in _lost_outcomes(session, found)}
        for notice in found:
            if notice.attempts >= settings.outbox_max_attempts:  # its last passes died before recording anything
                if notice.id in lost:
                    _record_lost(session, settings, notice, now, "not sent again: the attempt limit is reached (failed)")
                notice.status = NoticeStatus.FAILED
                notice.last_error = (
                    f"gave up after {notice.attempts} attempts; the dispatcher stopped during the last one "
                    f"({notice.last_error or 'no answer recorded'})"
                )[:2000]
                session.add(notice)
                continue
            if notice.kind == NoticeKind.FAILURE_REPORTED and "status_at_failure" in notice.facts and notice.attempts == 0:
                status = session.exec(
                    select(Declaration.status).where(Declaration.application_id == notice.application_id)
                ).first()
                if status is not None and str(status) != notice.facts["status_at_failure"]:
                    withdraw_notice(
                        session,
                        notice,
                        now,
                        f"the declaration moved on from {notice.facts['status_at_failure']} to {status} after the failure",
                    )
                    continue
            if notice.id in lost:  # the one way a notice can reach its receiver twice: recorded before it is sent again
                journal = index_of(settings.sent_journal_path)
                if journal.was_sent(notice.uid, notice.dedup_key, str(notice.kind), notice.application_id):
                    _record_lost(session, settings, notice, now, JOURNAL_HAS_IT)
                else:
                    _record_lost(session, settings, notice, now, "sent again with the same Message-ID")
            notices.append(notice)
        if not notices:
            return []
        for notice in notices:
            notice.attempts += 1
            notice.last_attempt_at = now
            notice.next_attempt_at = now + settings.outbox_lease
            session.add(notice)
        ids = [n.id for n in notices]
        declarations = {
            d.application_id: DeclarationFacts.of(d)
            for d in session.exec(select(Declaration).where(Declaration.application_id.in_({n.application_id for n in notices})))
        }
        files: dict[int, list[tuple[str, str, bytes]]] = {}
        for attachment in session.exec(
            select(NoticeAttachment).where(NoticeAttachment.notice_id.in_(ids)).order_by(NoticeAttachment.id)
        ):
            files.setdefault(attachment.notice_id, []).append((attachment.filename, attachment.content_type, attachment.content))
        session.flush()
        return [Claimed(n, declarations.get(n.application_id), files.get(n.id, [])) for n in notices]


def _has_decision(item: Claimed) -> bool:
    return any(name == DECISION_FILE for name, _, _ in item.attachments)


def fix_decision_documents(settings: Settings, items: list[Claimed], reference) -> None:
    """Fix decision.json of each decision notice, with the authority's detached signature (decision.json.p7s) when a
    service certificate is configured, as attachments of the notice: every attempt then sends the same bytes, and a
    certificate configured (or renewed) later changes no letter already begun. Without a service certificate the
    letter carries decision.json alone (and says in X-Customs-Authority-Signature that it is not signed)."""
    signer = authority_signer(settings)
    made: dict[int, list[tuple[str, str, bytes]]] = {}
    for item in items:
        body = decision_json_of(item.notice, item.declaration, reference)
        files = [(DECISION_FILE, "application/json", body)]
        if signer is not None:
            try:
                files.append((DECISION_SIGNATURE_FILE, "application/pkcs7-signature", signer.sign_detached(body)))
            except Exception:  # the letter is not held for it: it goes unsigned, and says so
                log.exception("notice %s: decision.json could not be signed; it goes out unsigned", item.notice.id)
        made[item.notice.id] = files
    with transaction(settings) as session:
        for item in items:
            stored = list(
                session.exec(
                    select(NoticeAttachment).where(NoticeAttachment.notice_id == item.notice.id).order_by(NoticeAttachment.id)
                )
            )
            if not any(a.filename == DECISION_FILE for a in stored):  # another pass may have fixed it meanwhile
                for filename, content_type, content in made[item.notice.id]:
                    attachment = NoticeAttachment(
                        notice_id=item.notice.id, filename=filename, content_type=content_type, content=content
                    )
                    session.add(attachment)
                    stored.append(attachment)
                session.flush()
            item.attachments = [(a.filename, a.content_type, a.content) for a in stored]


def record_attempt(settings: Settings, notice_id: int, attempt: int, result: SendResult, now: datetime) -> str:
    """Write what came of one attempt; returns sent, retry or failed."""
    return record_and_hold(settings, notice_id, attempt, result, now)[0]


def record_and_hold(
    settings: Settings,
    notice_id: int,
    attempt: int,
    result: SendResult,
    now: datetime,
    hold: tuple[int, int] | None = None,
) -> tuple[str, bool]:
    """Write what came of one attempt (sent, retry, failed or stale) and, in the same transaction, renew this
    pass's lease on the notice it sends next (``hold``: its id and attempt): False when another pass has it."""
    with transaction(settings) as session:
        verdict = _record(session, settings, notice_id, attempt, result, now)
        return verdict, (_hold(session, settings, *hold, now) if hold is not None else False)


def _hold(session, settings: Settings, notice_id: int, attempt: int, now: datetime) -> bool:
    notice = session.exec(select(Notice).where(Notice.id == notice_id).with_for_update()).one()
    if notice.status == NoticeStatus.PENDING and notice.attempts == attempt:
        notice.next_attempt_at = now + settings.outbox_lease
        session.add(notice)
        return True
    return False


def hold_claim(settings: Settings, notice_id: int, attempt: int, now: datetime) -> bool:
    """Renew this pass's lease on one notice right before sending it; False when another pass took it over."""
    with transaction(settings) as session:
        return _hold(session, settings, notice_id, attempt, now)


def _record(session, settings: Settings, notice_id: int, attempt: int, result: SendResult, now: datetime) -> str:
    notice = session.exec(select(Notice).where(Notice.id == notice_id).with_for_update()).one()
    session.add(
        DeliveryAttempt(notice_id=notice_id, attempt=attempt, at=now, outcome=result.outcome, detail=result.detail[:2000])
    )
    if notice.status != NoticeStatus.PENDING or notice.attempts != attempt:
        if result.outcome == SENT and notice.status == NoticeStatus.PENDING:
            pass  # another pass took it over after this one's lease ran out, but this one delivered it: it is sent
        else:
            return "stale"
    if result.outcome == SENT:
        notice.status = NoticeStatus.SENT
        notice.sent_at = now
        notice.server_response = result.detail[:2000]
        notice.last_error = None
        verdict = "sent"
    elif result.outcome == PERMANENT:
        notice.status = NoticeStatus.FAILED
        notice.last_error = f"refused permanently: {result.detail}"[:2000]
        verdict = "failed"
    elif notice.attempts >= settings.outbox_max_attempts:
        notice.status = NoticeStatus.FAILED
        notice.last_error = f"gave up after {notice.attempts} attempts; last: {result.detail}"[:2000]
        verdict = "failed"
    else:
        notice.next_attempt_at = now + backoff(notice.attempts, settings.outbox_backoff, settings.outbox_backoff_cap)
        notice.last_error = result.detail[:2000]
        verdict = "retry"
    session.add(notice)
    return verdict


# How long a pass keeps trying to record an attempt while the database does not answer (a mark that cannot be
# written is a lost mark: the notice would be sent again when its lease runs out).
MARK_RETRY_DELAYS = (0.2, 0.5, 1, 2, 4, 8)


async def _record_with_retries(
    settings: Settings, notice_id: int, attempt: int, result: SendResult, clock, hold: tuple[int, int] | None
) -> tuple[str, bool]:
    for delay in (*MARK_RETRY_DELAYS, None):
        try:
            return record_and_hold(settings, notice_id, attempt, result, clock(), hold)
        except Exception as exc:
            if delay is None or not is_transient_database_error(exc):
                raise
            log.warning("notice %s: its attempt cannot be recorded yet (%s); again in %s s", notice_id, type(exc).__name__, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def renew_claims(settings: Settings, claims: list[tuple[int, int]], now: datetime) -> set[int]:
    """Extend this pass's lease on the notices it has still to send; returns those it still holds."""
    held: set[int] = set()
    with transaction(settings) as session:
        for notice_id, attempt in claims:
            notice = session.exec(select(Notice).where(Notice.id == notice_id).with_for_update()).one()
            if notice.status == NoticeStatus.PENDING and notice.attempts == attempt:
                notice.next_attempt_at = now + settings.outbox_lease
                session.add(notice)
                held.add(notice_id)
    return held


def put_back(settings: Settings, claims: list[tuple[int, int]], now: datetime, why: str) -> int:
    """Release notices this pass claimed but did not try: the attempt is not counted; they wait one backoff."""
    count = 0
    with transaction(settings) as session:
        for notice_id, attempt in claims:
            notice = session.exec(select(Notice).where(Notice.id == notice_id).with_for_update()).one()
            if notice.status == NoticeStatus.PENDING and notice.attempts == attempt:
                notice.attempts -= 1
                notice.next_attempt_at = now + settings.outbox_backoff
                notice.last_error = f"not tried: {why}"[:2000]
                session.add(notice)
                if notice.attempts > 0:  # the attempt before stays the last one, with an outcome as of this claim
                    detail = f"not tried: {why}"[:2000]
                    row = DeliveryAttempt(notice_id=notice_id, attempt=notice.attempts, at=now, outcome="put_back", detail=detail)
                    session.add(row)
                count += 1
    return count


def eml_name(notice: Notice) -> str:
    return f"{notice.id:07d}-{notice.kind}-{notice.application_id}"


async def dispatch_due(
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
    limit: int | None = None,
    application_id: str | None = None,
    transport: Transport | None = None,
    in_clearance: bool = False,
) -> DispatchReport:
    """One pass: claim what is due, send it, record every attempt. Never raises for a delivery problem.

    ``in_clearance``: the pass a clearance run makes for its own notices. It waits at most
    ``smtp_timeout_in_clearance`` for the SMTP server, and while the server is away (it failed as a whole less
    than ``smtp_pause_after_failure`` ago) it tries nothing: the notices stay queued for outbox-dispatch."""
    settings = settings or get_settings()
    server = (settings.smtp_host, settings.smtp_port)
    clock = (lambda: now) if now is not None else utcnow  # tests hold the clock still
    report = DispatchReport()
    if in_clearance and settings.smtp_host:
        if smtp_away_for(settings) > 0:
            report.deferred = f"the SMTP server failed less than {settings.smtp_pause_after_failure} ago: left to outbox-dispatch"
            return report
        settings = settings.model_copy(update={"smtp_timeout": min(settings.smtp_timeout, settings.smtp_timeout_in_clearance)})
    claimed = claim_due(settings, clock(), limit or settings.outbox_batch_size, application_id)
    report.claimed = len(claimed)
    if not claimed:
        return report
    try:
        reference = load_reference(settings.reference_dir)
    except ReferenceDataError:
        reference = None  # office names are a courtesy; the notice goes without them
    sender = parseaddr(settings.mail_from)[1] or settings.mail_from
    unfixed = [c for c in claimed if c.notice.kind in DECISION_KINDS and c.declaration is not None and not _has_decision(c)]
    if unfixed:
        try:
            await asyncio.to_thread(fix_decision_documents, settings, unfixed, reference)
        except Exception as exc:  # the database went away: these wait for the next pass rather than go out unfixed
            log.exception("outbox: decision.json of %d notices could not be fixed", len(unfixed))
            report.outcomes["put_back"] += put_back(
                settings, [(c.notice.id, c.notice.attempts) for c in unfixed], clock(), str(exc)
            )
            claimed = [c for c in claimed if c not in unfixed]
    claimed_at = clock()
    pending = list(claimed)
    answers: Counter = Counter()  # what the attempts of this pass came to: sent, temporary, permanent
    first_temporary = None
    try:
        transport = transport or transport_for(settings)
    except Exception as exc:
        log.error("outbox: no transport (%s); %d notices put back", exc, len(pending))
        report.outcomes["put_back"] += put_back(settings, [(c.notice.id, c.notice.attempts) for c in pending], clock(), str(exc))
        report.errors.append(f"no transport: {exc}")
        report.unavailable = f"no transport: {exc}"
        return report
    held = True  # the first notice was claimed a moment ago; each later one is confirmed right before its send
    try:
        while pending:
            if clock() - claimed_at > settings.outbox_lease / 3:  # a slow pass renews its lease before it can run out
                still = renew_claims(settings, [(c.notice.id, c.notice.attempts) for c in pending], clock())
                report.outcomes["stale"] += len(pending) - len(still)
                pending = [c for c in pending if c.notice.id in still]
                claimed_at = clock()
                held = True
                if not pending:
                    break
            item = pending.pop(0)
            notice = item.notice
            if not held and not hold_claim(settings, notice.id, notice.attempts, clock()):
                report.outcomes["stale"] += 1  # another pass took it over after this one's lease ran out: not sent twice
                continue
            held = False
            result = await _send_one(settings, item, reference, transport, sender)
            answers[result.outcome] += 1
            first_temporary = first_temporary or (result.detail if result.outcome == TEMPORARY else None)
            following = pending[0].notice if pending and not result.server_wide else None
            # Marked right after its own SMTP transaction, with the next notice's lease confirmed in the same commit.
            verdict, held = await _record_with_retries(
                settings, notice.id, notice.attempts, result, clock, (following.id, following.attempts) if following else None
            )
            report.outcomes[verdict] += 1
            if following is not None and not held:
                pending.pop(0)
                report.outcomes["stale"] += 1
            if result.outcome != SENT:
                report.errors.append(f"notice {notice.id} to {notice.recipient}: {result.detail}")
            if result.server_wide:
                report.unavailable = result.detail
                if settings.smtp_host:
                    _smtp_away_until[server] = time.monotonic() + settings.smtp_pause_after_failure.total_seconds()
            elif result.outcome == SENT:
                _smtp_away_until.pop(server, None)
            if result.server_wide and pending:
                log.error("outbox: %s; %d notices put back for the next pass", result.detail, len(pending))
                report.outcomes["put_back"] += put_back(
                    settings, [(c.notice.id, c.notice.attempts) for c in pending], clock(), result.detail
                )
                pending = []
    finally:
        await transport.close()
    if report.unavailable is None and answers[TEMPORARY] and not answers[SENT] and not answers[PERMANENT]:
        report.unavailable = first_temporary
    return report


ALREADY_SENT = "sent before the database was restored (the sent journal has its Message-ID): not sent again"


async def _send_one(settings: Settings, item: Claimed, reference, transport: Transport, sender: str) -> SendResult:
    """Render and send one claimed notice; never raises. A notice the sent journal already holds (the database was
    restored from a backup older than its sending) is not sent again; one the server takes goes into the journal
    before it is marked sent."""
    notice = item.notice
    journal = settings.sent_journal_path
    if index_of(journal).was_sent(notice.uid, notice.dedup_key, str(notice.kind), notice.application_id):
        log.warning("notice %s (%s, %s): %s", notice.id, notice.kind, notice.dedup_key, ALREADY_SENT)
        return SendResult(SENT, ALREADY_SENT)
    try:
        if notice.kind in SYSTEM_KINDS:
            message = build_system_message(
                notice, sender=settings.mail_from, sender_names=settings.mail_from_names, domain=settings.mail_domain
            )
        elif item.declaration is None:
            raise LookupError(f"declaration {notice.application_id} of notice {notice.id} is missing")
        else:
            message = build_message(
                notice,
                item.declaration,
                reference,
                sender=settings.mail_from,
                sender_names=settings.mail_from_names,
                domain=settings.mail_domain,
                attachments=item.attachments,
            )
    except Exception as exc:  # a template or data defect: retrying will not cure it
        log.exception("notice %s (%s) cannot be rendered", notice.id, notice.kind)
        return SendResult(PERMANENT, f"cannot be rendered: {type(exc).__name__}: {exc}")
    try:
        result = await transport.send(message, sender, notice.recipient, eml_name(notice))
    except Exception as exc:  # whatever it was, the notice waits for its next attempt
        log.exception("notice %s: the transport failed", notice.id)
        return SendResult(TEMPORARY, f"{type(exc).__name__}: {exc}")
    if result.outcome == SENT:
        declaration = item.declaration
        record = notice_record(
            uid=notice.uid,
            dedup_key=notice.dedup_key,
            application_id=notice.application_id,
            kind=str(notice.kind),
            recipient=notice.recipient,
            number=declaration.registration_number if declaration is not None else None,
            at=utcnow(),
        )
        try:
            await asyncio.to_thread(append, journal, record)
        except OSError:  # the notice is out: marking it sent matters more; the journal's folder is looked into
            log.exception("notice %s: sent, but the sent journal %s could not be written", notice.id, journal)
    return result


def run_sync(coroutine: Awaitable[T]) -> T:
    """Run a coroutine from synchronous code, also from a thread that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def dispatch_due_sync(**kwargs) -> DispatchReport:
    return run_sync(dispatch_due(**kwargs))


# ----------------------------------------------------------------------------------------------
# The outbox as operations staff handle it


def requeue_subject(notice_id: int | None = None, since: datetime | None = None) -> dict[str, str]:
    """How an official's ``requeue_notice`` act names what it queues again: one notice, or every failed notice (last
    tried since a time, or ``all``)."""
    if notice_id is not None:
        return {"notice_id": str(notice_id)}
    return {"failed_since": since.astimezone(UTC).isoformat() if since is not None else "all"}


def _office_of(session, application_id: str) -> str | None:
    return session.exec(select(Declaration.customs_office).where(Declaration.application_id == application_id)).first()


def requeue_failed(
    *,
    act: SignedAct,
    since: datetime | None = None,
    official_id: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> int:
    """Queue every failed notice again (e.g. after a wrong SMTP password failed a batch), by a supervisor's signed act
    (``requeue_notice``, subject ``failed_since``); undeliverable ones need an address. Each notice's delivery attempt
    and its declaration's audit chain (``notice_requeued``) name the official and the act. A refused act is audited
    (under ``outbox``: it is about no one declaration) and changes nothing."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    checked = verify_act(act, now=now, settings=settings, reference=reference)
    refused = None
    with transaction(settings) as session:
        expected = Expected(act="requeue_notice", official_id=official_id, subject=requeue_subject(since=since))
        signed, problem, acting = act_checked(session, checked, expected, now=now, settings=settings)
        official = reference.officials.get(acting)
        if problem is None:
            problem = authority_problem(official, acting, office=official.office if official else None, zone=None)
        if problem is None and official.role != "supervisor":
            problem = Reason(
                code="ROLE_MISMATCH",
                path="official",
                message=f"official {official.id} is an {official.role}: every failed notice, of every office, is queued "
                "again by a supervisor (an inspector queues one notice of their office again)",
            )
        if problem is not None:
            refused = refuse_official_act(
                session,
                "outbox",
                None,
                acting,
                "requeue_failed",
                problem,
                now,
                {"act_sha256": act_sha256(act), **expected.subject},
            )
        else:
            query = select(Notice).where(Notice.status == NoticeStatus.FAILED).with_for_update()
            if since is not None:
                query = query.where(Notice.last_attempt_at >= since)
            notices = list(session.exec(query))
            record = record_act(session, signed, application_id=None, now=now, outcome={"notices": [n.id for n in notices]})
            for notice in notices:
                _requeue(session, notice, official.id, record, now, detail="(all failed)")
            count = len(notices)
    if refused is not None:
        raise refused
    return count


def _requeue(session, notice: Notice, official_id: str, record: SignedOfficialAct, now: datetime, *, detail: str = "") -> None:
    """Queue the notice again: a delivery attempt ``requeued`` and an audit event name the official and the act."""
    session.add(
        DeliveryAttempt(
            notice_id=notice.id,
            attempt=notice.attempts,
            at=now,
            outcome="requeued",
            detail=f"queued again by official {official_id}, signed act {record.id} {detail}".strip(),
        )
    )
    append_event(
        session,
        application_id=notice.application_id,
        office=_office_of(session, notice.application_id),
        event="notice_requeued",
        actor=official_id,
        at=now,
        details={"notice_id": notice.id, "kind": str(notice.kind), "to": notice.recipient, "signed_act": record.reference()},
    )
    notice.status = NoticeStatus.PENDING
    notice.attempts = 0
    notice.next_attempt_at = now
    notice.last_error = None
    session.add(notice)


def list_notices(*, status: str | None = None, application_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    if status is not None and status not in {s.value for s in NoticeStatus}:
        raise ValueError(f"status must be one of {', '.join(s.value for s in NoticeStatus)}; {status!r} given")
    with transaction() as session:
        query = select(Notice).order_by(Notice.id.desc()).limit(limit)
        if status:
            query = query.where(Notice.status == status)
        if application_id:
            query = query.where(Notice.application_id == application_id)
        return [
            {
                "id": n.id,
                "application_id": n.application_id,
                "kind": str(n.kind),
                "recipient": n.recipient,
                "language": n.language,
                "status": str(n.status),
                "attempts": n.attempts,
                "created_at_kz": kz_display(n.created_at),
                "next_attempt_at_kz": kz_display(n.next_attempt_at),
                "sent_at_kz": kz_display(n.sent_at),
                "last_error": n.last_error,
            }
            for n in session.exec(query)
        ]


def requeue_notice(
    notice_id: int,
    *,
    act: SignedAct,
    recipient: str | None = None,
    official_id: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Send a failed or undeliverable notice again (after the cause was fixed), optionally to a corrected address,
    by an official's signed act (``requeue_notice``: subject ``notice_id``, choice ``to`` for a corrected address)
    of the notice's office. The delivery attempt and the audit chain (``notice_requeued``, and ``notice_redirected``
    for another address) name the official and the act. A refused act is audited and changes nothing; a notice
    that is not there raises LookupError (nothing to audit it on)."""
    settings = settings or get_settings()
    reference = load_reference(settings.reference_dir)
    now = now or utcnow()
    checked = verify_act(act, now=now, settings=settings, reference=reference)
    refused = None
    with transaction(settings) as session:
        notice = session.exec(select(Notice).where(Notice.id == notice_id).with_for_update()).first()
        if notice is None:
            raise LookupError(f"no notice with id {notice_id}")
        office = _office_of(session, notice.application_id)
        expected = Expected(
            act="requeue_notice",
            official_id=official_id,
            subject=requeue_subject(notice_id),
            choice={"to": recipient} if recipient is not None else None,
        )
        signed, problem, acting = act_checked(session, checked, expected, now=now, settings=settings)
        official = reference.officials.get(acting)
        to = signed.act.choice.get("to") if signed else recipient
        if problem is None:
            problem = authority_problem(official, acting, office=office, zone=None)
        kind = None
        if problem is None and notice.status not in (NoticeStatus.FAILED, NoticeStatus.UNDELIVERABLE):
            problem, kind = (
                Reason(
                    code="NOTICE_NOT_REQUEUED",
                    path="notice_id",
                    message=f"notice {notice_id} is {notice.status}; only failed or undeliverable notices are queued again",
                ),
                "conflict",
            )
        address = usable_address(to) if to is not None else notice.recipient
        if problem is None and to is not None and address is None:
            problem = Reason(code="ADDRESS_UNUSABLE", path="to", message=f"{to!r} is not a usable e-mail address")
        elif problem is None and address is None:
            problem, kind = (
                Reason(code="NOTICE_NOT_REQUEUED", path="to", message=f"notice {notice_id} has no address; give one with --to"),
                "invalid",
            )
        if problem is not None:
            refusal = refuse_official_act(
                session,
                notice.application_id,
                office,
                acting,
                "requeue_notice",
                problem,
                now,
                {"notice_id": notice_id, "act_sha256": act_sha256(act)},
            )
            refused = Refused(problem, kind=kind) if kind else refusal
        else:
            record = record_act(
                session, signed, application_id=notice.application_id, now=now, outcome={"notice_id": notice.id, "to": address}
            )
            if to is not None:  # a legal document goes to another address: that is an act to account for
                notice.recipient = address
                append_event(
                    session,
                    application_id=notice.application_id,
                    office=office,
                    event="notice_redirected",
                    actor=official.id,
                    at=now,
                    details={"notice_id": notice.id, "kind": str(notice.kind), "to": address, "signed_act": record.reference()},
                )
            _requeue(session, notice, official.id, record, now, detail=f"to {address}" if to is not None else "")
            result = {"id": notice.id, "status": str(notice.status), "recipient": notice.recipient, "signed_act": record.id}
    if refused is not None:
        raise refused
    return result


def outbox_counts() -> dict[str, int]:
    """Notices by status (every status, zero included)."""
    with transaction() as session:
        rows = session.exec(select(Notice.status, func.count()).group_by(Notice.status)).all()
    counts = {str(status): 0 for status in NoticeStatus}
    counts.update({str(status): count for status, count in rows})
    return counts
