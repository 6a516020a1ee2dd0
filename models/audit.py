"""The audit chains: append-only, hash-chained events of every transition and official act.

One chain per customs office (``office:50101``; ``office:none`` for a declaration that names no valid
office): each event carries the hash of the one before it in its chain (``chain_seq`` 1, 2, 3...), so
removing, reordering or editing any event breaks every hash after it in that chain. Appending takes the
row lock on the chain's head (``audit_chain``) only: declarations of different offices never wait on
the same row. ``seq`` numbers every event of the system (a PostgreSQL sequence, which does not lock)
and orders a declaration's history. The database refuses UPDATE and DELETE on ``audit_event`` through
triggers (see ``AUDIT_DDL``).

Events written before the chains were split (``chain`` NULL) stay verifiable as the ``legacy`` chain,
ordered by ``seq`` and hashed as they were, with its head in ``audit_head``.

Whoever can get around the triggers can also recompute every later hash and the head, so the heads are
signed and kept outside the database as well (the anchors: ``customs/core/audit_anchors.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, func, text, update
from sqlmodel import Field, Session, SQLModel, select

from models.reasons import Reason
from models.types import UTCDateTime

GENESIS_HASH = "0" * 64
LEGACY_CHAIN = "legacy"


def chain_of(office: str | None) -> str:
    """The audit chain of a declaration addressed to ``office`` (as intake read it from the document)."""
    return f"office:{office}" if isinstance(office, str) and len(office) == 5 and office.isdigit() else "office:none"


class AuditHead(SQLModel, table=True):
    """The head of the legacy chain (events before the chains were split per office)."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    last_hash: str = GENESIS_HASH


class AuditChain(SQLModel, table=True):
    """The head of one chain: how many events it holds and the hash of the last."""

    __tablename__ = "audit_chain"

    chain: str = Field(primary_key=True, max_length=40)
    seq: int = 0
    last_hash: str = Field(default=GENESIS_HASH, max_length=64)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    chain: str | None = Field(default=None, max_length=40, description="office:<code>; NULL for the legacy chain")
    chain_seq: int | None = Field(default=None, description="Position in the chain, 1, 2, 3...; NULL in the legacy chain")
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
    chain: str | None = None,
) -> str:
    """SHA-256 of the event's canonical JSON. ``seq`` is the position in the chain; an event of an office's
    chain hashes its chain's name too (legacy events were hashed without one, and still are)."""
    canonical = json.dumps(
        ({"chain": chain} if chain is not None else {})
        | {
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


def _next_seq(session: Session) -> int:
    """The event's number in the whole system: a sequence on PostgreSQL (no lock); SQLite has one writer at a time."""
    if session.get_bind().dialect.name == "postgresql":
        return session.execute(text("SELECT nextval('audit_event_seq')")).scalar_one()
    return (session.execute(select(func.max(AuditEvent.seq))).scalar_one() or 0) + 1


def _advance(session: Session, chain: str) -> tuple[int, str, int | None]:
    """Take the chain's next position (the head row stays locked until the transaction ends): its number in
    the chain, the hash before it and, on PostgreSQL, the event's number in the whole system, drawn from the
    sequence in the same statement (one round trip fewer per event)."""
    returning = [AuditChain.seq, AuditChain.last_hash]
    if session.get_bind().dialect.name == "postgresql":
        returning.append(func.nextval("audit_event_seq"))
    bump = update(AuditChain).where(AuditChain.chain == chain).values(seq=AuditChain.seq + 1).returning(*returning)
    row = session.execute(bump).one_or_none()
    if row is None:
        if session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        session.execute(insert(AuditChain).values(chain=chain, seq=0, last_hash=GENESIS_HASH).on_conflict_do_nothing())
        row = session.execute(bump).one()
    return row[0], row[1], (row[2] if len(row) > 2 else None)


def append_event(
    session: Session,
    *,
    application_id: str,
    office: str | None,
    event: str,
    actor: str,
    at: datetime,
    from_status: str | None = None,
    to_status: str | None = None,
    reasons: Iterable[Reason] = (),
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain of ``office`` in the caller's transaction (its head stays locked until commit)."""
    chain = chain_of(office)
    chain_seq, prev_hash, seq = _advance(session, chain)
    at = at.astimezone(UTC)  # hashed exactly as it reads back from any backend
    fields = dict(
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
    digest = event_hash(seq=chain_seq, chain=chain, **fields)
    if seq is None:
        seq = _next_seq(session)
    record = AuditEvent(seq=seq, chain=chain, chain_seq=chain_seq, **fields, hash=digest)
    session.add(record)
    session.execute(update(AuditChain).where(AuditChain.chain == chain).values(last_hash=digest))
    session.flush()
    return record


@dataclass(frozen=True)
class ChainCheck:
    """The verdict on one chain (or, from ``verify_chain``, on all of them: the first broken one, else the total)."""

    events: int
    broken_seq: int | None = None
    broken_application_id: str | None = None
    problem: str | None = None
    chain: str | None = None
    chains: int = 1

    @property
    def intact(self) -> bool:
        return self.problem is None


def _check_events(rows_in_order, chain: str | None, head_seq: int | None, head_hash: str | None, position) -> ChainCheck:
    expected_prev = GENESIS_HASH
    expected = 1
    count = 0
    for ev in rows_in_order:
        count += 1
        at = position(ev)
        if at != expected:
            return ChainCheck(count, ev.seq, ev.application_id, f"event {expected} is missing (next is {at})", chain)
        if ev.prev_hash != expected_prev:
            return ChainCheck(
                count, ev.seq, ev.application_id, "its prev_hash does not match the hash of the event before it", chain
            )
        recomputed = event_hash(
            seq=at,
            chain=ev.chain,
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
            return ChainCheck(
                count, ev.seq, ev.application_id, "its content does not match its hash (the event was altered)", chain
            )
        expected_prev = ev.hash
        expected += 1
    if head_seq is not None and (head_seq != expected - 1 or head_hash != expected_prev):
        return ChainCheck(
            count,
            None,
            None,
            f"the chain head says {head_seq} events but {expected - 1} are stored (events were removed from the end)",
            chain,
        )
    return ChainCheck(count, chain=chain)


def _batches(session: Session, query, key, batch: int):
    last = 0
    while True:
        rows = session.exec(query.where(key > last).order_by(key).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = getattr(rows[-1], key.key)


def verify_chain(session: Session, batch: int = 5000) -> ChainCheck:
    """Recompute every chain from its first event; the first broken one is named, with its first broken event."""
    checks = []
    head = session.get(AuditHead, 1)
    legacy = _batches(session, select(AuditEvent).where(AuditEvent.chain.is_(None)), AuditEvent.seq, batch)
    checks.append(
        _check_events(legacy, LEGACY_CHAIN, head.seq if head else None, head.last_hash if head else None, lambda ev: ev.seq)
    )
    for chain in session.exec(select(AuditChain).order_by(AuditChain.chain)).all():
        rows = _batches(session, select(AuditEvent).where(AuditEvent.chain == chain.chain), AuditEvent.chain_seq, batch)
        checks.append(_check_events(rows, chain.chain, chain.seq, chain.last_hash, lambda ev: ev.chain_seq))
    broken = next((c for c in checks if not c.intact), None)
    chains = sum(1 for c in checks if c.events or c.chain != LEGACY_CHAIN)
    if broken is not None:
        return ChainCheck(broken.events, broken.broken_seq, broken.broken_application_id, broken.problem, broken.chain, chains)
    return ChainCheck(sum(c.events for c in checks), chains=chains)


AUDIT_DDL = {
    "sqlite": [
        "CREATE UNIQUE INDEX IF NOT EXISTS ux_audit_event_chain_seq ON audit_event (chain, chain_seq)",
        "CREATE TRIGGER IF NOT EXISTS audit_event_no_update BEFORE UPDATE ON audit_event "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS audit_event_no_delete BEFORE DELETE ON audit_event "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END",
    ],
    "postgresql": [
        "CREATE UNIQUE INDEX IF NOT EXISTS ux_audit_event_chain_seq ON audit_event (chain, chain_seq)",
        "CREATE SEQUENCE IF NOT EXISTS audit_event_seq",
        # a new sequence continues after the events already stored; once used it is never set again (a process
        # starting beside others that append must not move it)
        "SELECT setval('audit_event_seq', (SELECT MAX(seq) FROM audit_event), true) "
        "WHERE NOT (SELECT is_called FROM audit_event_seq) AND EXISTS (SELECT 1 FROM audit_event)",
        "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$",
        "DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event",
        "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
    ],
}
