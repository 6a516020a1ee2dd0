"""The audit chain: append-only, hash-chained events of every transition and official act.

Each event carries the hash of the one before it (one chain for the whole system, ordered by
``seq``), so removing, reordering or editing any event breaks every hash after it. Appends take the
row lock on ``audit_head``, which serialises writers on every backend; the database refuses UPDATE
and DELETE on ``audit_event`` through triggers (see ``APPEND_ONLY_DDL``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, update
from sqlmodel import Field, Session, SQLModel, select

from models.reasons import Reason
from models.types import UTCDateTime

GENESIS_HASH = "0" * 64


class AuditHead(SQLModel, table=True):
    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    last_hash: str = GENESIS_HASH


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    application_id: str = Field(index=True, max_length=40)
    event: str = Field(max_length=40, description="transition, or the name of an act that changes no status")
    from_status: str | None = Field(default=None, max_length=40)
    to_status: str | None = Field(default=None, max_length=40)
    actor: str = Field(max_length=60, description="'system' or an official's id")
    at: datetime = Field(sa_type=UTCDateTime)
    reasons: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


def event_hash(
    *,
    seq: int,
    application_id: str,
    event: str,
    from_status: str | None,
    to_status: str | None,
    actor: str,
    at: datetime,
    reasons: list[dict[str, Any]],
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    canonical = json.dumps(
        {
            "seq": seq,
            "application_id": application_id,
            "event": event,
            "from": from_status,
            "to": to_status,
            "actor": actor,
            "at": at.isoformat(timespec="microseconds"),
            "reasons": reasons,
            "details": details,
            "prev": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append_event(
    session: Session,
    *,
    application_id: str,
    event: str,
    actor: str,
    at: datetime,
    from_status: str | None = None,
    to_status: str | None = None,
    reasons: Iterable[Reason] = (),
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (the head row stays locked until it commits)."""
    head_seq, prev_hash = session.execute(
        update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1).returning(AuditHead.seq, AuditHead.last_hash)
    ).one()
    at = at.astimezone(UTC)  # hashed exactly as it reads back from any backend
    fields = dict(
        seq=head_seq,
        application_id=application_id,
        event=event,
        from_status=from_status,
        to_status=to_status,
        actor=actor,
        at=at,
        reasons=[r.model_dump() for r in reasons],
        details=json.loads(json.dumps(details or {}, default=str)),
        prev_hash=prev_hash,
    )
    digest = event_hash(**fields)
    record = AuditEvent(**fields, hash=digest)
    session.add(record)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=digest))
    session.flush()
    return record


@dataclass(frozen=True)
class ChainCheck:
    events: int
    broken_seq: int | None = None
    broken_application_id: str | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def verify_chain(session: Session, batch: int = 5000) -> ChainCheck:
    """Recompute the chain from the first event; name the first broken one."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    last_seq = 0
    while True:
        rows = session.exec(select(AuditEvent).where(AuditEvent.seq > last_seq).order_by(AuditEvent.seq).limit(batch)).all()
        if not rows:
            break
        for ev in rows:
            count += 1
            if ev.seq != expected_seq:
                return ChainCheck(count, ev.seq, ev.application_id, f"event {expected_seq} is missing (next is {ev.seq})")
            if ev.prev_hash != expected_prev:
                return ChainCheck(
                    count, ev.seq, ev.application_id, "its prev_hash does not match the hash of the event before it"
                )
            recomputed = event_hash(
                seq=ev.seq,
                application_id=ev.application_id,
                event=ev.event,
                from_status=ev.from_status,
                to_status=ev.to_status,
                actor=ev.actor,
                at=ev.at,
                reasons=ev.reasons,
                details=ev.details,
                prev_hash=ev.prev_hash,
            )
            if recomputed != ev.hash:
                return ChainCheck(count, ev.seq, ev.application_id, "its content does not match its hash (the event was altered)")
            expected_prev = ev.hash
            expected_seq += 1
            last_seq = ev.seq
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != last_seq or head.last_hash != expected_prev):
        return ChainCheck(
            count,
            last_seq + 1,
            None,
            f"the chain head says {head.seq} events but {last_seq} are stored (events were removed from the end)",
        )
    return ChainCheck(count)


APPEND_ONLY_DDL = {
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS audit_event_no_update BEFORE UPDATE ON audit_event "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS audit_event_no_delete BEFORE DELETE ON audit_event "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$",
        "DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event",
        "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
    ],
}
