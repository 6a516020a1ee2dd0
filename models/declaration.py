"""The declaration table and its state machine: the only place a status changes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, Session, SQLModel

from models.audit import AuditEvent, append_event
from models.outbox import NOTICE_ON_TRANSITION, Notice, addressee_of, queue_notice
from models.reasons import Reason
from models.types import UTCDateTime


class Status(StrEnum):
    SUBMITTED = "submitted"
    SIGNATURES_CHECKED = "signatures_checked"
    REGISTRATION_REFUSED = "registration_refused"
    REGISTERED = "registered"
    LANE_ASSIGNED = "lane_assigned"
    AWAITING_OFFICIAL = "awaiting_official"
    RELEASED = "released"
    RELEASE_REFUSED = "release_refused"
    RELEASE_CANCELLED = "release_cancelled"


TRANSITIONS: dict[Status | None, frozenset[Status]] = {
    None: frozenset({Status.SUBMITTED}),
    Status.SUBMITTED: frozenset({Status.SIGNATURES_CHECKED}),
    Status.SIGNATURES_CHECKED: frozenset({Status.REGISTERED, Status.REGISTRATION_REFUSED}),
    Status.REGISTERED: frozenset({Status.LANE_ASSIGNED}),
    Status.LANE_ASSIGNED: frozenset({Status.RELEASED, Status.AWAITING_OFFICIAL}),
    Status.AWAITING_OFFICIAL: frozenset({Status.RELEASED, Status.RELEASE_REFUSED}),
    Status.RELEASED: frozenset({Status.RELEASE_CANCELLED}),
    Status.REGISTRATION_REFUSED: frozenset(),
    Status.RELEASE_REFUSED: frozenset(),
    Status.RELEASE_CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, application_id: str, from_status: Status | None, to_status: Status):
        self.application_id = application_id
        self.from_status = from_status
        self.to_status = to_status
        allowed = ", ".join(sorted(TRANSITIONS.get(from_status, ()))) or "none"
        super().__init__(
            f"declaration {application_id}: cannot go from {from_status or 'nothing'} to {to_status} "
            f"(allowed from {from_status or 'nothing'}: {allowed})"
        )


def check_transition(application_id: str, from_status: Status | None, to_status: Status) -> None:
    if to_status not in TRANSITIONS.get(from_status, frozenset()):
        raise IllegalTransition(application_id, from_status, to_status)


# The status column holds the enum's names (SQLAlchemy's Enum), the audit events its values: one is the other upper-cased.
assert all(status.name == status.value.upper() for status in Status)

# The database's own guard of the status (issue 25, item 3): a declaration is inserted as SUBMITTED, and its status
# changes only to the ``to_status`` of its latest transition event (the latest event of that declaration carrying a
# ``to_status``), and only from that event's ``from_status``. ``Declaration.move_to`` appends that event before the
# status is written, in the same transaction; the pairing makes each event good for exactly one change (after it
# the status is its ``to_status``, and moving on needs a newer event from there). An UPDATE made by hand, with no
# such event, is refused; one made with the trigger dropped is found by ``customs audit verify`` (the status
# against the last transition). Installed by the migration 2026-12-06-declaration-status-audited and checked at
# every start-up (customs.core.db.init_db), so a dropped trigger comes back with the next start.
STATUS_GUARD = "declaration_status_audited"
STATUS_DDL = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS {STATUS_GUARD} BEFORE UPDATE OF status, application_id ON declaration "
        "WHEN OLD.status IS NOT NEW.status OR OLD.application_id IS NOT NEW.application_id "
        "BEGIN SELECT RAISE(ABORT, 'a declaration''s status changes only with its audit event: the latest transition "
        "event of the declaration must go from the old status to the new one (declaration_status_audited)') "
        "WHERE OLD.application_id IS NOT NEW.application_id OR NOT EXISTS (SELECT 1 FROM (SELECT from_status, to_status "
        "FROM audit_event WHERE application_id = NEW.application_id AND to_status IS NOT NULL ORDER BY seq DESC LIMIT 1) "
        "AS last WHERE upper(last.to_status) = NEW.status AND upper(last.from_status) = OLD.status); END",
        "CREATE TRIGGER IF NOT EXISTS declaration_inserted_submitted BEFORE INSERT ON declaration "
        "WHEN NEW.status IS NOT 'SUBMITTED' BEGIN SELECT RAISE(ABORT, 'a declaration enters the database as "
        "SUBMITTED; every later status comes with its audit event (declaration_inserted_submitted)'); END",
    ],
    "postgresql": [
        f"CREATE OR REPLACE FUNCTION {STATUS_GUARD}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "DECLARE last_from text; last_to text; "
        "BEGIN "
        "IF TG_OP = 'INSERT' THEN "
        "IF CAST(NEW.status AS text) <> 'SUBMITTED' THEN RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = "
        "'declaration ' || NEW.application_id || ': a declaration enters the database as SUBMITTED, not ' || "
        "CAST(NEW.status AS text) || ' (declaration_status_audited)'; END IF; "
        "RETURN NEW; END IF; "
        "IF NEW.application_id IS DISTINCT FROM OLD.application_id THEN RAISE EXCEPTION USING ERRCODE = 'check_violation', "
        "MESSAGE = 'declaration ' || OLD.application_id || ': its application id does not change "
        "(declaration_status_audited)'; END IF; "
        "IF NEW.status IS NOT DISTINCT FROM OLD.status THEN RETURN NEW; END IF; "
        "SELECT from_status, to_status INTO last_from, last_to FROM audit_event WHERE application_id = NEW.application_id "
        "AND to_status IS NOT NULL ORDER BY seq DESC LIMIT 1; "
        "IF last_to IS NULL OR upper(last_to) <> CAST(NEW.status AS text) "
        "OR upper(last_from) IS DISTINCT FROM CAST(OLD.status AS text) THEN "
        "RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'declaration ' || NEW.application_id || ': status ' "
        "|| CAST(OLD.status AS text) || ' -> ' || CAST(NEW.status AS text) || ' has no audit event of that transition "
        "(its latest transition event is ' || coalesce(last_from, 'nothing') || ' -> ' || coalesce(last_to, 'none') || "
        "'): a declaration''s status changes only with its audit event (declaration_status_audited)'; END IF; "
        "RETURN NEW; END $$",
        # created when missing only: no lock on the declaration table at every start-up
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'declaration_status_audited' "
        "AND tgrelid = to_regclass('declaration')) THEN "
        "CREATE TRIGGER declaration_status_audited BEFORE INSERT OR UPDATE OF status, application_id ON declaration "
        "FOR EACH ROW EXECUTE FUNCTION declaration_status_audited(); END IF; END $$",
    ],
}


class Declaration(SQLModel, table=True):
    __tablename__ = "declaration"
    __table_args__ = (UniqueConstraint("content_sha256", "attempt", name="uq_declaration_content_attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    application_id: str = Field(unique=True, max_length=40)
    channel: str = Field(max_length=20)
    submitted_at: datetime = Field(sa_type=UTCDateTime, index=True)
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    content_sha256: str = Field(index=True, max_length=64)
    signature: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # The same bytes come again as a new application only after a refusal for their signatures
    # (customs.rules.resubmission): attempt 2, 3... each naming the application it follows.
    attempt: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    resubmission_of: str | None = Field(default=None, max_length=40, index=True)

    # What intake could read from the document before validation (for lookup, tags and routing).
    schema_id: str | None = Field(default=None, max_length=80)
    customs_office: str | None = Field(default=None, max_length=20, index=True)
    declarant_id: str | None = Field(default=None, max_length=20, index=True)

    status: Status = Field(default=Status.SUBMITTED, max_length=40, index=True)
    updated_at: datetime = Field(sa_type=UTCDateTime)

    signature_valid: bool | None = None
    signature_reasons: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    signers: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))

    registration_number: str | None = Field(default=None, unique=True, max_length=30)
    registered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reasons: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))

    lane: str | None = Field(default=None, max_length=10)
    risk_profiles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))

    decision_code: str | None = Field(default=None, max_length=4)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_by: str | None = Field(default=None, max_length=60)
    decision_ref: str | None = Field(
        default=None, max_length=40, description="Id of the official's decision (replays are recognised)."
    )

    # Where the goods are (zone of customs control) and the legal release deadline, fixed at registration.
    zone: str | None = Field(default=None, max_length=20, index=True)
    release_due_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    release_alerted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    release_breached_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    entered_by: str | None = Field(default=None, max_length=60, description="The official who entered a paper declaration.")
    registration_alerted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    registration_breached_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def reason_objects(self) -> list[Reason]:
        return [Reason(**r) for r in self.reasons]

    def move_to(
        self,
        session: Session,
        to_status: Status,
        *,
        actor: str,
        at: datetime,
        reasons: Iterable[Reason] = (),
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Change the status through the state machine and write its audit event, in the caller's transaction."""
        from_status = Status(self.status)
        check_transition(self.application_id, from_status, to_status)
        event = append_event(
            session,
            application_id=self.application_id,
            office=self.customs_office,
            event="transition",
            from_status=from_status.value if from_status else None,
            to_status=to_status.value,
            actor=actor,
            at=at,
            reasons=reasons,
            details=details,
        )
        self.status = to_status
        self.updated_at = at
        session.add(self)
        self.queue_transition_notice(session, event)
        return event

    def record_submission(self, session: Session, *, actor: str, details: dict[str, Any] | None = None) -> AuditEvent:
        """The first event of a declaration: nothing -> submitted, at the submission time intake fixed."""
        check_transition(self.application_id, None, Status.SUBMITTED)
        self.status = Status.SUBMITTED
        self.updated_at = self.submitted_at
        session.add(self)
        event = append_event(
            session,
            application_id=self.application_id,
            office=self.customs_office,
            event="transition",
            from_status=None,
            to_status=Status.SUBMITTED.value,
            actor=actor,
            at=self.submitted_at,
            details=details,
        )
        self.queue_transition_notice(session, event)
        return event

    def queue_transition_notice(self, session: Session, event: AuditEvent) -> Notice | None:
        """The document the declarant gets for this transition, queued in the same transaction (if any)."""
        kind = NOTICE_ON_TRANSITION.get(event.to_status or "")
        if kind is None:
            return None
        addressee = addressee_of(self.content)
        facts = {
            **event.details,
            "event_at": event.at.isoformat(),
            "actor": event.actor,
            "reasons": event.reasons,
            "registration_number": self.registration_number,
            "registered_at": self.registered_at.isoformat() if self.registered_at else None,
            "release_due_at": self.release_due_at.isoformat() if self.release_due_at else None,
            "zone": self.zone,
            "decision_code": self.decision_code,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decided_by": self.decided_by,
        }
        return queue_notice(
            session,
            application_id=self.application_id,
            kind=kind,
            dedup_key=f"{kind}:{self.application_id}:{event.seq}",
            recipient=addressee["email"],
            language=addressee["language"],
            facts=facts,
            at=event.at,
            event_seq=event.seq,
        )


class Attachment(SQLModel, table=True):
    """A supporting document exactly as received, with its detached signature."""

    __tablename__ = "attachment"
    __table_args__ = (UniqueConstraint("declaration_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    declaration_id: int = Field(foreign_key="declaration.id", index=True)
    position: int
    filename: str = Field(max_length=255)
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    content_sha256: str = Field(max_length=64)
    signature: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class ReleaseMark(SQLModel, table=True):
    """The release mark an official of the zone affixes after an automatic release (one per declaration)."""

    __tablename__ = "release_mark"

    id: int | None = Field(default=None, primary_key=True)
    application_id: str = Field(unique=True, max_length=40)
    registration_number: str | None = Field(default=None, max_length=30)
    office: str | None = Field(default=None, max_length=5, index=True)
    zone: str | None = Field(default=None, max_length=20, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    affixed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    affixed_by: str | None = Field(default=None, max_length=60)
    withdrawn_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="The release was cancelled before the mark."
    )


class RegistrationCounter(SQLModel, table=True):
    """Last registration serial per office per day (Kazakhstan date); bumped in the registering transaction."""

    __tablename__ = "registration_counter"

    office: str = Field(primary_key=True, max_length=5)
    day: date = Field(primary_key=True)
    last_value: int = 0
