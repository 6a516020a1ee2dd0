"""What a clearance run tells operations staff about its declaration (issue 24, part 2): the facts its log lines
and its artifact are written from, read in one transaction, with private persons masked (customs.rules.privacy).

Read only; the run writes nothing here. The decision is the official's signed act as recorded (its certificate
serial, not the official's IIN); the notices are the outbox's rows of the declaration, with how far each got.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import select

from customs.core.db import find_declaration, transaction
from customs.core.settings import Settings, get_settings
from customs.rules.privacy import mask_private
from customs.services.steps import StepOutcome, outcome_of
from models.official_act import SignedOfficialAct
from models.outbox import Notice


@dataclass(frozen=True)
class DecisionRecord:
    code: str | None
    official_id: str | None
    decided_at: datetime | None
    automatic: bool
    cert_serial: str | None = None  # the signed act's certificate (an official's decision)
    algorithm: str | None = None
    act_id: int | None = None


@dataclass(frozen=True)
class NoticeRecord:
    kind: str
    recipient: str  # masked
    status: str
    attempts: int
    sent_at: datetime | None
    last_error: str | None  # masked, shortened


@dataclass(frozen=True)
class ClearanceStory:
    outcome: StepOutcome
    channel: str
    submitted_at: datetime
    registered_at: datetime | None
    registration_due_at: datetime
    registration_breached_at: datetime | None
    release_breached_at: datetime | None
    decision: DecisionRecord | None
    notices: list[NoticeRecord] = field(default_factory=list)


def notices_by_kind(notices: list[NoticeRecord]) -> str:
    """``acceptance sent, registration sent, release queued`` (several of a kind: ``release_deadline_alert 2 sent``)."""
    counts = Counter((n.kind, n.status) for n in notices)
    parts = [f"{kind}{f' {count}' if count > 1 else ''} {status}" for (kind, status), count in counts.items()]
    return ", ".join(parts) or "none"


def clearance_story(application_id: str, settings: Settings | None = None) -> ClearanceStory:
    settings = settings or get_settings()
    with transaction(settings) as session:
        declaration = find_declaration(session, application_id)
        decision = None
        if declaration.decision_code is not None or declaration.decided_by is not None:
            act = None
            if declaration.decided_by != "system":
                act = session.exec(
                    select(SignedOfficialAct)
                    .where(SignedOfficialAct.application_id == declaration.application_id, SignedOfficialAct.act == "decide")
                    .order_by(SignedOfficialAct.id.desc())
                ).first()
            decision = DecisionRecord(
                code=declaration.decision_code,
                official_id=declaration.decided_by,
                decided_at=declaration.decided_at,
                automatic=declaration.decided_by == "system",
                cert_serial=act.cert_serial if act else None,
                algorithm=act.algorithm if act else None,
                act_id=act.id if act else None,
            )
        rows = session.exec(select(Notice).where(Notice.application_id == declaration.application_id).order_by(Notice.id)).all()
        notices = [
            NoticeRecord(
                kind=str(n.kind),
                recipient=mask_private(n.recipient or "-"),
                status=str(n.status),
                attempts=n.attempts,
                sent_at=n.sent_at,
                last_error=mask_private(n.last_error[:300]) if n.last_error else None,
            )
            for n in rows
        ]
        return ClearanceStory(
            outcome=outcome_of(declaration, acted=False),
            channel=declaration.channel,
            submitted_at=declaration.submitted_at,
            registered_at=declaration.registered_at,
            registration_due_at=declaration.submitted_at + settings.registration_deadline,
            registration_breached_at=declaration.registration_breached_at,
            release_breached_at=declaration.release_breached_at,
            decision=decision,
            notices=notices,
        )
