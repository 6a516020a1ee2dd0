"""What every step shares: loading and locking the declaration, the outcome it reports, retry policy."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, select

from models.declaration import Declaration


class DeclarationNotFound(LookupError):
    def __init__(self, key: str):
        super().__init__(f"no declaration with application id or registration number {key!r}")
        self.key = key


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


def lock_declaration(session: Session, application_id: str) -> Declaration:
    """Read the declaration with a row lock (PostgreSQL FOR UPDATE; SQLite's BEGIN IMMEDIATE locks the file)."""
    declaration = session.exec(
        select(Declaration).where(Declaration.application_id == application_id).with_for_update()
    ).first()
    if declaration is None:
        raise DeclarationNotFound(application_id)
    return declaration


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
    )


def is_transient_database_error(exc: BaseException | None) -> bool:
    """Errors a retry can cure: lost connections, lock time-outs, serialisation failures, deadlocks."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    pgcode = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return pgcode in {"40001", "40P01", "55P03"}


def retry_on_database_error(task, task_run, state) -> bool:
    """Prefect retry condition: retry database hiccups, never a refusal or a programming error."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as error:  # pragma: no cover - depends on Prefect's result storage
            exc = error
    return is_transient_database_error(exc if isinstance(exc, BaseException) else None)


def current_outcome(application_id: str) -> StepOutcome:
    """Where the declaration stands now (read only)."""
    from customs.db import transaction

    with transaction() as session:
        declaration = session.exec(select(Declaration).where(Declaration.application_id == application_id)).first()
        if declaration is None:
            raise DeclarationNotFound(application_id)
        return outcome_of(declaration, acted=False)
