"""The outbox: notices written in the same transaction as the state change that causes them.

A notice is one e-mail to one recipient. It holds what happened (``kind`` and ``facts``, frozen when
the event happened), not rendered text: the dispatcher renders it from the notice and the stored
declaration, both unchangeable, so a notice sent twice (a crash between sending and marking) is the
same message with the same Message-ID, derived from the notice's ``uid``.

``dedup_key`` is unique: a transition queues its notice once, whatever re-runs a step.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary
from sqlmodel import Field, Session, SQLModel

from models.document import written_declarant
from models.types import UTCDateTime


class NoticeKind(StrEnum):
    ACCEPTANCE = "acceptance"
    REGISTRATION = "registration"
    REGISTRATION_REFUSAL = "registration_refusal"
    RELEASE = "release"
    RELEASE_REFUSAL = "release_refusal"
    RELEASE_CANCELLATION = "release_cancellation"
    FAILURE_REPORTED = "failure_reported"
    SUPPORT_REPORT = "support_report"
    RELEASE_DEADLINE_ALERT = "release_deadline_alert"
    PRINT_REQUEST_ACCEPTED = "print_request_accepted"
    PRINT_DEADLINE_ALERT = "print_deadline_alert"
    REGISTRATION_DEADLINE_ALERT = "registration_deadline_alert"
    OPS_SYSTEM_ALERT = "ops_system_alert"  # to the operations mailbox about the service itself, not a declaration
    AWAITING_OFFICIAL = "awaiting_official"  # the declaration waits for an official: why, and the deadline


# Notices that carry a decision, and so the decision as a JSON attachment.
# Notices about the service, not a declaration: their application_id is SYSTEM_APPLICATION, and they are rendered
# from their facts alone (customs.notices.render.build_system_message).
SYSTEM_KINDS = frozenset({NoticeKind.OPS_SYSTEM_ALERT})
SYSTEM_APPLICATION = "-"
DECISION_KINDS = frozenset({NoticeKind.RELEASE, NoticeKind.RELEASE_REFUSAL, NoticeKind.RELEASE_CANCELLATION})

# Which transition sends which document to the declarant (statuses as strings: models.declaration imports us).
NOTICE_ON_TRANSITION: dict[str, NoticeKind] = {
    "submitted": NoticeKind.ACCEPTANCE,
    "registered": NoticeKind.REGISTRATION,
    "awaiting_official": NoticeKind.AWAITING_OFFICIAL,
    "registration_refused": NoticeKind.REGISTRATION_REFUSAL,
    "released": NoticeKind.RELEASE,
    "release_refused": NoticeKind.RELEASE_REFUSAL,
    "release_cancelled": NoticeKind.RELEASE_CANCELLATION,
}

LANGUAGES = ("kk", "ru", "en")


class NoticeStatus(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    SENT = "sent"  # accepted by the SMTP server (or written as .eml)
    FAILED = "failed"  # refused permanently (5xx), or temporary failures past the attempt limit
    UNDELIVERABLE = "undeliverable"  # no usable address: nothing to send to
    WITHDRAWN = "withdrawn"  # held, then not sent: what it said no longer holds (a failure the system healed)


class Notice(SQLModel, table=True):
    __tablename__ = "notice"
    __table_args__ = (Index("ix_notice_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(unique=True, max_length=32, description="Random and fixed at creation; the Message-ID is <uid@mail_domain>.")
    dedup_key: str = Field(unique=True, max_length=120, description="What caused the notice; one notice per cause.")
    application_id: str = Field(index=True, max_length=40)
    kind: NoticeKind = Field(max_length=40)
    event_seq: int | None = Field(default=None, description="The audit event that caused it.")
    recipient: str | None = Field(default=None, max_length=320)
    language: str = Field(max_length=2)
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

    status: NoticeStatus = Field(default=NoticeStatus.PENDING, max_length=20)
    created_at: datetime = Field(sa_type=UTCDateTime)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    attempts: int = 0
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=2000)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    server_response: str | None = Field(default=None, max_length=2000)

    @property
    def message_id_local(self) -> str:
        return f"notice-{self.uid}"


class NoticeAttachment(SQLModel, table=True):
    """A file fixed when the notice was queued (the support report's logs and state rendering)."""

    __tablename__ = "notice_attachment"

    id: int | None = Field(default=None, primary_key=True)
    notice_id: int = Field(foreign_key="notice.id", index=True)
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=100)
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class DeliveryAttempt(SQLModel, table=True):
    """One try to hand a notice to the mail server: when, and what came of it."""

    __tablename__ = "delivery_attempt"

    id: int | None = Field(default=None, primary_key=True)
    notice_id: int = Field(foreign_key="notice.id", index=True)
    attempt: int
    at: datetime = Field(sa_type=UTCDateTime)
    outcome: str = Field(
        max_length=20,
        description="sent, temporary or permanent; unknown (never recorded: its dispatcher stopped), put_back, requeued",
    )
    detail: str | None = Field(default=None, max_length=2000)


# ----------------------------------------------------------------------------------------------
# Who a declaration's notices go to: read from the stored document, leniently (a refused document
# still gets its refusal when it names a usable address).


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def usable_address(value: Any) -> str | None:
    """An address safe to put in an envelope and a header, or None."""
    if not isinstance(value, str) or not value or len(value) > 320 or _CONTROL.search(value):
        return None
    try:
        address = Address(addr_spec=value.strip())
    except (HeaderParseError, ValueError, IndexError, TypeError):
        return None
    if not address.username or "." not in address.domain:
        return None
    return address.addr_spec


def addressee_of(content: bytes) -> dict[str, Any]:
    """E-mail, language, name and IIN/BIN of the declarant named in the stored document."""
    declarant = written_declarant(content)
    name = declarant.name
    if name is not None:  # one line of text: a name cannot forge lines in a plain-text notice
        name = " ".join(_CONTROL.sub(" ", name).split())
    return {
        "email": usable_address(declarant.email),
        "language": declarant.language if declarant.language in LANGUAGES else "ru",
        "name": name[:300] if name is not None else None,
        "id": declarant.identifier[:20] if declarant.identifier else None,
    }


def queue_notice(
    session: Session,
    *,
    application_id: str,
    kind: NoticeKind,
    dedup_key: str,
    recipient: str | None,
    language: str,
    facts: dict[str, Any],
    at: datetime,
    event_seq: int | None = None,
    attachments: list[tuple[str, str, bytes]] = (),
    due: datetime | None = None,
) -> Notice:
    """Write a notice in the caller's transaction. Without a usable recipient it is kept, as undeliverable.
    ``due``: not sent before then (held); by default at once."""
    address = usable_address(recipient)
    notice = Notice(
        uid=uuid.uuid4().hex,
        dedup_key=dedup_key,
        application_id=application_id,
        kind=kind,
        event_seq=event_seq,
        recipient=address,
        language=language if language in LANGUAGES else "ru",
        facts=json.loads(json.dumps(facts, default=str)),
        created_at=at,
        next_attempt_at=due or at,
    )
    if address is None:
        notice.status = NoticeStatus.UNDELIVERABLE
        notice.last_error = f"no usable e-mail address ({recipient!r})"
    session.add(notice)
    session.flush()
    for filename, content_type, content in attachments:
        session.add(NoticeAttachment(notice_id=notice.id, filename=filename, content_type=content_type, content=content))
    return notice
