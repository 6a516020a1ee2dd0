"""The declaration's status is in the audit trail (issue 25, item 3). An attack probe set a declaration refused for
its signature (DIGEST_MISMATCH) to released with a plain UPDATE in the database: the API and `customs status`
showed it released and `customs audit verify` passed. Now the database refuses a status change that has no audit
event of that very transition, on SQLite and PostgreSQL; and with the trigger dropped, `customs audit verify`
names the declaration and both statuses."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from customs.cli import app
from customs.core.db import get_engine, init_db
from customs.services.queries import declaration_status, verify_declaration_statuses
from models.declaration import Status
from tests.helpers import as_bytes, cleared, run_steps, sample, stored, submit_signed, unique


def refused_for_its_signature(company_signer) -> str:
    """A declaration whose signature does not cover its bytes: registration refused (DIGEST_MISMATCH)."""
    content = as_bytes(unique(sample()))
    other = as_bytes(unique(sample()))
    from customs.services.intake import submit_declaration

    application_id = submit_declaration(content, company_signer.sign(other)).application_id
    assert run_steps(application_id).status == Status.REGISTRATION_REFUSED
    assert any(r["code"] == "DIGEST_MISMATCH" for r in stored(application_id).reasons)
    return application_id


def released_by_hand(application_id: str) -> None:
    with get_engine().begin() as connection:
        connection.execute(text("UPDATE declaration SET status = 'RELEASED' WHERE application_id = :id"), {"id": application_id})


def drop_status_guard() -> None:
    with get_engine().begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("DROP TRIGGER declaration_status_audited ON declaration"))
        else:
            connection.execute(text("DROP TRIGGER declaration_status_audited"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request):
    return request.getfixturevalue("settings" if request.param == "sqlite" else "pg_settings")


def test_a_status_changed_by_hand_is_refused_by_the_database(database, company_signer):
    refused = refused_for_its_signature(company_signer)
    with pytest.raises(DBAPIError, match="declaration_status_audited"):
        released_by_hand(refused)
    assert stored(refused).status == Status.REGISTRATION_REFUSED
    assert declaration_status(refused)["status"] == "registration_refused"
    # nor back to an earlier status the trail once held, nor with an event of another transition
    with pytest.raises(DBAPIError, match="declaration_status_audited"), get_engine().begin() as connection:
        connection.execute(
            text("UPDATE declaration SET status = 'SIGNATURES_CHECKED' WHERE application_id = :id"), {"id": refused}
        )
    # nor a declaration inserted already decided
    with pytest.raises(DBAPIError, match="SUBMITTED"), get_engine().begin() as connection:
        connection.execute(
            text(
                "INSERT INTO declaration (application_id, channel, submitted_at, content, content_sha256, status, updated_at, "
                "signature_reasons, signers, reasons, risk_profiles, attempt) SELECT 'A-FORGED', channel, submitted_at, "
                "content, 'forged', 'RELEASED', updated_at, signature_reasons, signers, reasons, risk_profiles, 1 "
                "FROM declaration WHERE application_id = :id"
            ),
            {"id": refused},
        )
    # the state machine's own changes, each with its event, go through as before
    assert cleared(company_signer).status == Status.RELEASED
    assert verify_declaration_statuses() == []


def test_a_status_changed_with_the_trigger_dropped_is_reported_by_audit_verify(database, company_signer):
    refused = refused_for_its_signature(company_signer)
    released = cleared(company_signer).application_id
    drop_status_guard()
    released_by_hand(refused)
    with get_engine().begin() as connection:
        connection.execute(
            text("UPDATE declaration SET status = 'AWAITING_OFFICIAL' WHERE application_id = :id"), {"id": released}
        )
    (first, second) = verify_declaration_statuses()
    assert (first.application_id, first.status, first.last_transition) == (
        refused,
        "released",
        "signatures_checked -> registration_refused",
    )
    assert (second.application_id, second.status, second.last_transition) == (
        released,
        "awaiting_official",
        "lane_assigned -> released",
    )
    result = CliRunner().invoke(app, ["audit", "verify", "--quiet"])
    assert result.exit_code == 1
    assert f"declaration {refused}: status released in the database, but its last transition in the audit trail" in result.output
    assert "is signatures_checked -> registration_refused" in result.output
    init_db(database)  # the next start-up puts the guard back
    with pytest.raises(DBAPIError, match="declaration_status_audited"):
        released_by_hand(released)


def test_an_existing_database_gets_the_guard_from_its_migration(settings, company_signer):
    """A database of the previous release has no guard: the written migration installs it (and records it once)."""
    from customs.core.migrations import apply_migrations

    refused = refused_for_its_signature(company_signer)
    drop_status_guard()
    with get_engine().begin() as connection:
        connection.execute(text("DELETE FROM schema_migration WHERE id = '2026-12-06-declaration-status-audited'"))
    applied = apply_migrations(get_engine())
    assert len(applied) == 1 and "2026-12-06-declaration-status-audited" in applied[0]
    with pytest.raises(DBAPIError, match="declaration_status_audited"):
        released_by_hand(refused)
    assert apply_migrations(get_engine()) == []


def test_a_submission_without_its_event_is_reported(settings, company_signer):
    accepted = submit_signed(company_signer, unique(sample())).application_id
    assert verify_declaration_statuses() == []
    from customs.core.db import transaction
    from tests.helpers import drop_audit_triggers

    drop_audit_triggers()
    with transaction() as session:
        session.execute(text("DELETE FROM audit_event WHERE application_id = :id"), {"id": accepted})
    (mismatch,) = verify_declaration_statuses()
    assert str(mismatch) == f"declaration {accepted}: status submitted in the database, but no transition in the audit trail"
