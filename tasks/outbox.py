"""The outbox dispatcher: claim due notices, send them with aiosmtplib (or write .eml files), record each attempt.

Delivery is at least once. A pass first *claims* its notices in a short transaction (attempt counted,
next attempt pushed a lease ahead, so no other dispatcher takes them), then sends, then marks each
notice in its own transaction right after the server accepted it. A crash between the server's
acceptance and the mark leaves the notice claimed; when the lease runs out it is sent again, as the
same message with the same Message-ID (see tasks/notices.py).

The answer of the server decides what happens next:
- 2xx: sent;
- 5xx (address unknown, policy refusal): failed at once, with the server's answer;
- 4xx, refused or lost connection, time-out: retried after a delay that doubles from
  ``outbox_backoff`` up to ``outbox_backoff_cap``, and failed after ``outbox_max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Awaitable, Protocol, TypeVar

import aiosmtplib
from prefect import task
from sqlmodel import select

from customs.db import transaction
from customs.reference import ReferenceDataError, load_reference
from customs.settings import Settings, get_settings
from customs.timeutil import utcnow
from models.declaration import Declaration
from models.outbox import DeliveryAttempt, Notice, NoticeAttachment, NoticeStatus
from tasks.notices import DeclarationFacts, build_message

log = logging.getLogger(__name__)
T = TypeVar("T")

SENT, TEMPORARY, PERMANENT = "sent", "temporary", "permanent"


@dataclass(frozen=True)
class SendResult:
    outcome: str  # sent, temporary or permanent
    detail: str
    server_wide: bool = False  # the server refused the session (login, greeting, sender): no notice of this pass can go


def classify_reply(code: int | None, message: str) -> SendResult:
    """An SMTP reply as an outcome: 5xx permanent, anything else that is not 2xx temporary."""
    text = f"{code} {message}".strip() if code else message
    if code is not None and 200 <= code < 300:
        return SendResult(SENT, text)
    if code is not None and 500 <= code < 600:
        return SendResult(PERMANENT, text)
    return SendResult(TEMPORARY, text)


def backoff(attempts: int, base: timedelta, cap: timedelta) -> timedelta:
    """Delay before the next attempt after ``attempts`` attempts: base, 2 base, 4 base... at most cap."""
    return min(base * (2 ** max(attempts - 1, 0)), cap)


# ----------------------------------------------------------------------------------------------
# Transports


class Transport(Protocol):
    async def send(self, message: EmailMessage, sender: str, recipient: str, name: str) -> SendResult: ...
    async def close(self) -> None: ...


class EmlTransport:
    """The embedded default: each notice becomes ``<name>.eml`` under the outbox folder (written atomically)."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def send(self, message: EmailMessage, sender: str, recipient: str, name: str) -> SendResult:
        target = self.directory / f"{name}.eml"
        try:
            descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".part")
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(message.as_bytes())
            os.replace(temporary, target)
        except OSError as exc:
            return SendResult(TEMPORARY, f"cannot write {target}: {exc}")
        return SendResult(SENT, f"written to {target}")

    async def close(self) -> None:
        return None


class SmtpTransport:
    """aiosmtplib on one connection per pass; reconnects once per message after the connection is lost."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client: aiosmtplib.SMTP | None = None

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_security == "tls",
            start_tls=s.smtp_security == "starttls",
            timeout=s.smtp_timeout,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
        )

    async def _connected(self) -> aiosmtplib.SMTP:
        if self.client is None or not self.client.is_connected:
            client = self._new_client()
            await client.connect()
            self.client = client
        return self.client

    async def send(self, message: EmailMessage, sender: str, recipient: str, name: str) -> SendResult:
        """Only a refusal of this recipient or of this message's data is a verdict on the notice (5xx: permanent).
        A refused greeting, login, STARTTLS or sender concerns the whole session: temporary, and the pass stops."""
        try:
            client = await self._connected()
            _, response = await client.send_message(message, sender=sender, recipients=[recipient])
            return SendResult(SENT, response)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return classify_reply(refused.code, f"{refused.message} (recipient {refused.recipient})")
        except aiosmtplib.SMTPDataError as exc:
            return classify_reply(exc.code, f"message refused: {exc.message}")
        except aiosmtplib.SMTPResponseException as exc:  # greeting, EHLO, STARTTLS, AUTH, MAIL FROM
            await self._drop()
            return SendResult(TEMPORARY, f"the server refused the session: {exc.code} {exc.message} ({type(exc).__name__})", server_wide=True)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            await self._drop()
            return SendResult(TEMPORARY, f"{type(exc).__name__}: {exc or 'no answer'}")

    async def _drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - closing a broken socket
                pass

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()


def transport_for(settings: Settings) -> Transport:
    return SmtpTransport(settings) if settings.smtp_host else EmlTransport(settings.eml_dir)


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

    @property
    def sent(self) -> int:
        return self.outcomes["sent"]

    def as_dict(self) -> dict[str, Any]:
        return {"claimed": self.claimed, **{k: self.outcomes[k] for k in ("sent", "retry", "failed", "stale", "put_back")},
                "errors": self.errors[:20]}


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
        for notice in session.exec(query).all():
            if notice.attempts >= settings.outbox_max_attempts:  # its last passes died before recording anything
                notice.status = NoticeStatus.FAILED
                notice.last_error = f"gave up after {notice.attempts} attempts; the dispatcher stopped during the last one ({notice.last_error or 'no answer recorded'})"[:2000]
                session.add(notice)
                continue
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
        for attachment in session.exec(select(NoticeAttachment).where(NoticeAttachment.notice_id.in_(ids)).order_by(NoticeAttachment.id)):
            files.setdefault(attachment.notice_id, []).append((attachment.filename, attachment.content_type, attachment.content))
        session.flush()
        return [Claimed(n, declarations.get(n.application_id), files.get(n.id, [])) for n in notices]


def record_attempt(settings: Settings, notice_id: int, attempt: int, result: SendResult, now: datetime) -> str:
    """Write what came of one attempt; returns sent, retry or failed."""
    with transaction(settings) as session:
        notice = session.exec(select(Notice).where(Notice.id == notice_id).with_for_update()).one()
        session.add(DeliveryAttempt(notice_id=notice_id, attempt=attempt, at=now, outcome=result.outcome, detail=result.detail[:2000]))
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
) -> DispatchReport:
    """One pass: claim what is due, send it, record every attempt. Never raises for a delivery problem."""
    settings = settings or get_settings()
    clock = (lambda: now) if now is not None else utcnow  # tests hold the clock still
    report = DispatchReport()
    claimed = claim_due(settings, clock(), limit or settings.outbox_batch_size, application_id)
    report.claimed = len(claimed)
    if not claimed:
        return report
    try:
        reference = load_reference(settings.reference_dir)
    except ReferenceDataError:
        reference = None  # office names are a courtesy; the notice goes without them
    sender = parseaddr(settings.mail_from)[1] or settings.mail_from
    claimed_at = clock()
    pending = list(claimed)
    try:
        transport = transport or transport_for(settings)
    except Exception as exc:
        log.error("outbox: no transport (%s); %d notices put back", exc, len(pending))
        report.outcomes["put_back"] += put_back(settings, [(c.notice.id, c.notice.attempts) for c in pending], clock(), str(exc))
        report.errors.append(f"no transport: {exc}")
        return report
    try:
        while pending:
            if clock() - claimed_at > settings.outbox_lease / 3:  # a slow pass renews its lease before it can run out
                held = renew_claims(settings, [(c.notice.id, c.notice.attempts) for c in pending], clock())
                report.outcomes["stale"] += len(pending) - len(held)
                pending = [c for c in pending if c.notice.id in held]
                claimed_at = clock()
                if not pending:
                    break
            item = pending.pop(0)
            notice = item.notice
            try:
                if item.declaration is None:
                    raise LookupError(f"declaration {notice.application_id} of notice {notice.id} is missing")
                message = build_message(notice, item.declaration, reference, sender=settings.mail_from,
                                        domain=settings.mail_domain, attachments=item.attachments)
            except Exception as exc:  # a template or data defect: retrying will not cure it
                log.exception("notice %s (%s) cannot be rendered", notice.id, notice.kind)
                result = SendResult(PERMANENT, f"cannot be rendered: {type(exc).__name__}: {exc}")
            else:
                try:
                    result = await transport.send(message, sender, notice.recipient, eml_name(notice))
                except Exception as exc:  # whatever it was, the notice waits for its next attempt
                    log.exception("notice %s: the transport failed", notice.id)
                    result = SendResult(TEMPORARY, f"{type(exc).__name__}: {exc}")
            verdict = record_attempt(settings, notice.id, notice.attempts, result, clock())
            report.outcomes[verdict] += 1
            if result.outcome != SENT:
                report.errors.append(f"notice {notice.id} to {notice.recipient}: {result.detail}")
            if result.server_wide and pending:
                log.error("outbox: %s; %d notices put back for the next pass", result.detail, len(pending))
                report.outcomes["put_back"] += put_back(settings, [(c.notice.id, c.notice.attempts) for c in pending], clock(), result.detail)
                pending = []
    finally:
        await transport.close()
    return report


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


@task(name="deliver-notices", retries=2, retry_delay_seconds=[2, 5], timeout_seconds=300)
def deliver_notices(application_id: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """Send the due notices (of one declaration, or all); delivery problems are recorded, not raised."""
    from prefect import get_run_logger

    report = dispatch_due_sync(application_id=application_id, limit=limit)
    logger = get_run_logger()
    if report.claimed:
        logger.info("notices: %s", report.as_dict())
    for error in report.errors[:10]:
        logger.warning("delivery: %s", error)
    return report.as_dict()
