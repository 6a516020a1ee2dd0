"""Written migrations (customs.core.migrations) on a database of the previous release, SQLite and PostgreSQL:
every row kept as it was, the new rules in force afterwards, each step applied once."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from customs.core.db import dispose_engines, get_engine, init_db
from customs.core.migrations import MIGRATIONS
from customs.core.settings import Settings, configure
from customs.services.intake import submit_declaration
from customs.services.printing import copy_of
from customs.services.queries import declaration_status
from models.outbox import NoticeStatus
from tests.helpers import as_bytes, make_settings, postgres_url, reach_postgres, run_steps, sample, stored, unique

SCHEMAS = Path(__file__).parent.parent / "fixtures" / "schema"
AT = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def fill(connection, content: bytes, signature: bytes) -> None:
    """Rows as the previous release wrote them: a refused declaration with an attachment, and a print request."""
    row = {
        "application_id": "A261128-OLD00001",
        "channel": "electronic",
        "at": AT.replace(tzinfo=None),
        "content": content,
        "sha": hashlib.sha256(content).hexdigest(),
        "signature": signature,
        "reasons": '[{"code": "SIGNER_NOT_DECLARANT", "path": "declaration", "message": "m"}]',
    }
    connection.execute(
        text(
            "INSERT INTO declaration (application_id, channel, submitted_at, content, content_sha256, signature, "
            "customs_office, declarant_id, status, updated_at, signature_valid, signature_reasons, signers, reasons, "
            "risk_profiles) VALUES (:application_id, :channel, :at, :content, :sha, :signature, '50101', "
            "'050840001233', 'REGISTRATION_REFUSED', :at, false, :reasons, '[]', :reasons, '[]')"
        ),
        row,
    )
    connection.execute(
        text(
            "INSERT INTO attachment (declaration_id, position, filename, content, content_sha256) "
            "SELECT id, 0, 'invoice.pdf', :pdf, :sha FROM declaration"
        ),
        {"pdf": b"%PDF-1.4 old", "sha": hashlib.sha256(b"%PDF-1.4 old").hexdigest()},
    )
    connection.execute(  # a request of the previous release: its copy was rendered inside the request
        text(
            "INSERT INTO print_request (request_id, application_id, registration_number, office, requested_at, alert_at, "
            "due_at, status, pdf, pdf_sha256, declaration_sha256) VALUES ('PR261128-OLD', 'A261128-OLD00001', "
            "'50101/281126/0000001', '50101', :at, :at, :at, 'PENDING', :pdf, :sha, :sha)"
        ),
        {"at": AT.replace(tzinfo=None), "pdf": b"%PDF-1.4 copy", "sha": hashlib.sha256(b"%PDF-1.4 copy").hexdigest()},
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def previous_release(request, tmp_path, pki, company_signer):
    """A database with the previous release's schema and rows; yields (settings, content, signature)."""
    content = as_bytes(unique(sample()))
    signature = b"0\x03\x02\x01\x00"  # what a refused application stored; never verified again
    schema = None
    if request.param == "sqlite":
        settings = make_settings(tmp_path / "data", pki)
        settings.data_dir.mkdir(parents=True)
        engine = sqlalchemy.create_engine(settings.sqlalchemy_url)
    else:
        url = postgres_url() or "postgresql://postgres@127.0.0.1:5432/test"
        base = Settings(data_dir=tmp_path, database_url=url).sqlalchemy_url
        admin = sqlalchemy.create_engine(base)
        reach_postgres(admin, url)
        schema = f"customs_migrate_{uuid.uuid4().hex[:12]}"
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        scoped = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
        settings = make_settings(tmp_path / "data", pki, database_url=scoped)
        engine = sqlalchemy.create_engine(scoped)
    schema_sql = (SCHEMAS / f"2026-11-28-{request.param}.sql").read_text()
    with engine.begin() as connection:
        if request.param == "sqlite":
            connection.connection.dbapi_connection.executescript(schema_sql)
        else:
            connection.exec_driver_sql(schema_sql)
        fill(connection, content, signature)
    engine.dispose()
    configure(settings)
    yield settings, content, signature
    configure(None)
    dispose_engines()
    if schema:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_a_database_of_the_previous_release_is_migrated_keeping_every_row(previous_release, company_signer):
    settings, content, signature = previous_release
    init_db(settings)
    engine = get_engine(settings)
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT application_id, content, signature, status, attempt, resubmission_of FROM declaration")
        ).one()
        attachment = connection.execute(
            text("SELECT d.application_id, filename, a.content FROM attachment a JOIN declaration d ON d.id = a.declaration_id")
        ).one()
        applied = set(connection.execute(text("SELECT id FROM schema_migration")).scalars())
    assert tuple(row) == ("A261128-OLD00001", content, signature, "REGISTRATION_REFUSED", 1, None)
    assert tuple(attachment) == ("A261128-OLD00001", "invoice.pdf", b"%PDF-1.4 old")
    assert applied == {m.id for m in MIGRATIONS}
    if engine.dialect.name == "postgresql":  # values the models' enums gained since (a notice's status withdrawn)
        with engine.connect() as connection:
            labels = set(
                connection.execute(
                    text(
                        "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n "
                        "ON n.oid = t.typnamespace WHERE n.nspname = current_schema() AND t.typname = 'noticestatus'"
                    )
                ).scalars()
            )
        assert labels == {s.name for s in NoticeStatus}
    request, pdf = copy_of("PR261128-OLD")  # its copy kept, ready to print
    assert (pdf, request.pdf_sha256, request.render_failures) == (
        b"%PDF-1.4 copy",
        hashlib.sha256(b"%PDF-1.4 copy").hexdigest(),
        0,
    )
    with engine.begin() as connection:  # and a request may now wait for its copy
        connection.execute(text("UPDATE print_request SET pdf = NULL, pdf_sha256 = NULL"))

    # the new rule on the migrated rows: the same bytes, signed by the declarant, are application 2
    resubmitted = submit_declaration(content, company_signer.sign(content))
    assert resubmitted.created and stored(resubmitted.application_id).resubmission_of == "A261128-OLD00001"
    assert run_steps(resubmitted.application_id).status == "released"
    assert declaration_status("A261128-OLD00001")["resubmitted_as"] == resubmitted.application_id
    assert {i["name"] for i in sqlalchemy.inspect(engine).get_indexes("declaration")} >= {
        "ix_declaration_content_sha256",
        "ix_declaration_resubmission_of",
        "ix_declaration_status",
    }
    # the bytes are still unique per attempt: the database itself refuses a second attempt 2
    with pytest.raises(IntegrityError, match=r"uq_declaration_content_attempt|UNIQUE"), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO declaration (application_id, channel, submitted_at, content, content_sha256, status, "
                "updated_at, signature_reasons, signers, reasons, risk_profiles, attempt) SELECT 'A-DUPLICATE', channel, "
                "submitted_at, content, content_sha256, 'SUBMITTED', updated_at, signature_reasons, signers, reasons, "
                "risk_profiles, attempt FROM declaration WHERE attempt = 2"
            )
        )

    init_db(settings)  # again: nothing to do, nothing changed
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM declaration")).scalar_one() == 2
        assert connection.execute(text("SELECT COUNT(*) FROM schema_migration")).scalar_one() == len(MIGRATIONS)


def test_a_new_database_records_the_migrations_without_running_them(settings):
    with get_engine(settings).connect() as connection:
        assert set(connection.execute(text("SELECT id FROM schema_migration")).scalars()) == {m.id for m in MIGRATIONS}
