"""Intake, the clearance steps and the audit chain against a real database (SQLite here; PostgreSQL in test_postgres.py)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import func, select
from typer.testing import CliRunner

from customs.cli import app
from customs.core.db import get_engine, transaction
from customs.core.settings import configure
from customs.rules import Refused
from customs.services.intake import IncomingAttachment, submit_declaration
from customs.services.queries import declaration_status
from customs.services.steps import assign_lane, check_signatures, register_declaration, release_or_hold
from models.audit import AuditEvent, verify_chain
from models.declaration import Declaration, IllegalTransition, RegistrationCounter, Status
from tests.helpers import as_bytes, events, run_steps, sample, stored, submit_signed, unique


def counts() -> tuple[int, int]:
    with transaction() as session:
        return (
            session.exec(select(func.count()).select_from(Declaration)).one(),
            session.exec(select(func.count()).select_from(AuditEvent)).one(),
        )


# --- Intake -----------------------------------------------------------------------------------


def test_submission_stores_exact_bytes_and_time(settings, company_signer):
    content = as_bytes(unique(sample()))
    signature = company_signer.sign(content)
    before = datetime.now(UTC)
    submission = submit_declaration(
        content, signature, [IncomingAttachment("invoice.pdf", b"%PDF", company_signer.sign(b"%PDF"))]
    )
    with transaction() as session:
        stored = session.exec(select(Declaration).where(Declaration.application_id == submission.application_id)).one()
    assert stored.content == content and stored.signature == signature
    assert stored.content_sha256 == hashlib.sha256(content).hexdigest()
    assert before <= stored.submitted_at <= datetime.now(UTC) and stored.submitted_at.tzinfo is not None
    assert (stored.status, stored.customs_office, stored.declarant_id) == (Status.SUBMITTED, "50101", "050840001233")
    assert submission.application_id.startswith("A") and submission.created


def test_identical_bytes_return_the_existing_application(settings, company_signer):
    content = as_bytes(unique(sample()))
    first = submit_declaration(content, company_signer.sign(content))
    again = submit_declaration(content, company_signer.sign(content))
    assert again.application_id == first.application_id and not again.created
    assert counts() == (1, 1)


def stranger_signer(pki, label: str = "stranger"):
    from customs.pki.testing import CmsSigner

    other = pki.issue(name="ТОО «Другая»", bin="120303400058", label=label)
    return CmsSigner(other.cert_path, other.key_path, (pki.issuing_cert_path,))


def test_a_corrected_signature_makes_a_new_application(settings, company_signer, pki):
    """Refused for its signature alone (signed by someone who may not act for the declarant): the same bytes
    with the declarant's own signature are a new application naming the refused one, and are released."""
    content = as_bytes(unique(sample()))
    wrong = stranger_signer(pki).sign(content)
    first = submit_declaration(content, wrong)
    assert [r["code"] for r in run_steps(first.application_id).reasons] == ["SIGNER_NOT_DECLARANT"]
    assert submit_declaration(content, wrong).application_id == first.application_id  # the same signature: refused again

    second = submit_declaration(content, company_signer.sign(content))
    assert second.created and second.application_id != first.application_id
    assert (stored(second.application_id).attempt, stored(second.application_id).resubmission_of) == (2, first.application_id)
    submitted = events(second.application_id)[0]
    assert (submitted.details["resubmission_of"], submitted.details["attempt"]) == (first.application_id, 2)
    assert run_steps(second.application_id).status == "released"
    # the refused application is kept as it was
    assert (stored(first.application_id).status, stored(first.application_id).signature) == (Status.REGISTRATION_REFUSED, wrong)
    # released: the same bytes again are that application, whatever the signature
    again = submit_declaration(content, company_signer.sign(content))
    assert (again.application_id, again.created) == (second.application_id, False)
    assert counts()[0] == 2


def test_a_refusal_for_the_document_needs_new_bytes(settings, company_signer, pki):
    """Refused for the signature and for the document: a new signature alone changes nothing."""
    document = unique(sample())
    document["totals"]["customs_value"] = "1.00"
    content = as_bytes(document)
    first = submit_declaration(content, stranger_signer(pki).sign(content))
    assert {r["code"] for r in run_steps(first.application_id).reasons} == {"SIGNER_NOT_DECLARANT", "TOTALS_MISMATCH"}
    again = submit_declaration(content, company_signer.sign(content))
    assert (again.application_id, again.created, again.status) == (first.application_id, False, "registration_refused")


def test_applications_of_the_same_bytes_are_bounded(settings, pki):
    configure(settings.model_copy(update={"max_applications_per_declaration": 2}))
    content = as_bytes(unique(sample()))
    for n in range(2):  # each a signature of its own (a signer's signature of the same bytes is the same bytes)
        run_steps(submit_declaration(content, stranger_signer(pki, f"stranger-{n}").sign(content)).application_id)
    with pytest.raises(Refused) as refused:
        submit_declaration(content, stranger_signer(pki, "stranger-2").sign(content))
    assert (refused.value.code, refused.value.kind) == ("RESUBMISSIONS_EXHAUSTED", "conflict")
    assert "2 times" in refused.value.message and counts()[0] == 2


@pytest.mark.parametrize(
    "content, code",
    [
        (b"", "EMPTY"),
        (b'{"schema": "kz.customs/goods-declaration@1",', "JSON_INVALID"),
        ('{"name": "ТОО"}'.encode("cp1251"), "NOT_UTF8"),
        (b"[1, 2, 3]", "OBJECT_EXPECTED"),
        (b'{"schema": "a", "schema": "b"}', "DUPLICATE_KEY"),
        # issue 15: these gave HTTP 500 (and a traceback from customs submit) or were refused only at registration
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "TOO_DEEP"),
        (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "TOO_DEEP"),
        (b'{"items": [{"quantity": ' + b"9" * 5000 + b"}]}", "NUMBER_TOO_LARGE"),
        (b'{"items": [{"quantity": 1e999}]}', "NUMBER_NOT_FINITE"),
        (b'{"items": [{"quantity": -1e999}]}', "NUMBER_NOT_FINITE"),
        (b'{"items": [{"quantity": NaN}]}', "NUMBER_NOT_FINITE"),
        (b'{"items": [{"quantity": Infinity}]}', "NUMBER_NOT_FINITE"),
        (b'{"items": [{"quantity": -Infinity}]}', "NUMBER_NOT_FINITE"),
        # found by `make fuzz`: a lone surrogate escaped in JSON raised UnicodeEncodeError while storing (HTTP 500 on
        # any database); a NUL in the fields intake stores apart (schema, office, declarant) raised DataError on PostgreSQL
        (b'{"schema": "\\ud800"}', "CHARACTER_NOT_ALLOWED"),
        (b'{"declarant": {"bin": "050840001233\\udfff"}}', "CHARACTER_NOT_ALLOWED"),
        (b'{"goods": [{"\\udc80": 1}]}', "CHARACTER_NOT_ALLOWED"),
        (b'{"customs_office": "50101\\u0000"}', "CHARACTER_NOT_ALLOWED"),
    ],
)
def test_bad_bytes_are_refused_at_intake_and_nothing_is_stored(settings, content, code):
    with pytest.raises(Refused) as error:
        submit_declaration(content, b"sig")
    assert error.value.code == code
    assert counts() == (0, 0)


def test_nul_and_lone_surrogates_are_refused_where_they_are_and_escaped_pairs_are_accepted(settings):
    """JSON may escape any code point; intake refuses the two that no field allows and nothing can store."""

    def with_name(escaped: str) -> bytes:
        return as_bytes(unique(sample())).replace("ТОО «Алатау Импорт»".encode(), escaped.encode(), 1)  # box 14's name

    for escaped, shown in (("\\u0000", "\\u0000"), ("A\\ud83d", "\\ud83d"), ("\\ude00B", "\\ude00")):
        with pytest.raises(Refused) as error:
            submit_declaration(with_name(escaped), b"sig")
        assert (error.value.code, error.value.path) == ("CHARACTER_NOT_ALLOWED", "$.declarant.name"), error.value
        assert shown in error.value.message
    assert counts() == (0, 0)
    assert submit_declaration(with_name("\\ud83d\\ude00"), b"sig").created  # a pair of escapes is one character (U+1F600)


def test_oversized_declaration(settings, company_signer):
    from customs.core.settings import configure

    configure(settings.model_copy(update={"max_declaration_bytes": 1000}))
    content = as_bytes(sample())
    with pytest.raises(Refused) as error:
        submit_declaration(content, None)
    assert error.value.code == "TOO_LARGE" and str(len(content)) in error.value.message
    assert counts() == (0, 0)


def test_unknown_channel(settings):
    with pytest.raises(Refused) as error:
        submit_declaration(as_bytes(sample()), None, channel="fax")
    assert error.value.code == "CHANNEL_UNKNOWN"


# --- The steps --------------------------------------------------------------------------------


def test_green_declaration_is_released_automatically(settings, company_signer):
    submission = submit_signed(
        company_signer, unique(sample()), [("invoice.pdf", b"%PDF-1.4 invoice"), ("contract.pdf", b"contract")]
    )
    outcome = run_steps(submission.application_id)
    assert (outcome.status, outcome.lane) == ("released", "green")
    status = declaration_status(outcome.registration_number)
    assert status["decision_code"] == "10"
    assert [e["to"] for e in status["history"]] == ["submitted", "signatures_checked", "registered", "lane_assigned", "released"]
    assert len(status["signers"]) == 3 and all(s["valid"] for s in status["signers"])


def test_yellow_declaration_waits_for_an_official(settings, person_signer):
    submission = submit_signed(person_signer, unique(sample("02-yellow-laptops-from-cn.json")))
    outcome = run_steps(submission.application_id)
    assert (outcome.status, outcome.lane) == ("awaiting_official", "yellow")
    assert declaration_status(submission.application_id)["risk_profiles"] == ["RP-2024-017"]


def test_refusal_lists_every_reason_and_keeps_everything(settings, company_signer, pki):
    document = unique(sample())
    document["customs_office"] = "99999"
    document["goods"][1]["net_kg"] = "1000.000"
    document["totals"]["customs_value"] = "1.00"
    other = pki.issue(name="ТОО «Другая»", bin="120303400058")
    from customs.pki.testing import CmsSigner

    stranger = CmsSigner(other.cert_path, other.key_path, (pki.issuing_cert_path,))
    content = as_bytes(document)
    signature = stranger.sign(content)
    submission = submit_declaration(content, signature, [IncomingAttachment("invoice.pdf", b"%PDF", None)])
    outcome = run_steps(submission.application_id)
    assert outcome.status == "registration_refused"
    assert [(r["code"], r["path"]) for r in outcome.reasons] == [
        ("SIGNER_NOT_DECLARANT", "declaration"),
        ("SIGNATURE_MISSING", "attachments[0]"),
        ("OFFICE_UNKNOWN", "$.customs_office"),
        ("NET_EXCEEDS_GROSS", "$.goods[1].net_kg"),
        ("TOTALS_MISMATCH", "$.totals.customs_value"),
    ]
    with transaction() as session:
        stored = session.exec(select(Declaration).where(Declaration.application_id == submission.application_id)).one()
        refusal = session.exec(select(AuditEvent).where(AuditEvent.to_status == "registration_refused")).one()
    assert stored.content == content and stored.signature == signature and stored.registration_number is None
    assert [r["code"] for r in refusal.reasons] == [r["code"] for r in outcome.reasons]


def test_structurally_broken_document_is_refused_not_lost(settings, company_signer):
    document = unique(sample())
    document["schema"] = "kz.customs/goods-declaration@9"
    document["goods"][0]["gross_kg"] = 1450.5
    submission = submit_signed(company_signer, document)
    outcome = run_steps(submission.application_id)
    assert outcome.status == "registration_refused"
    assert {r["code"] for r in outcome.reasons} == {"SCHEMA_UNKNOWN", "AMOUNT_NOT_STRING"}


def test_format_and_logic_reasons_are_refused_together_and_nothing_registers(settings, company_signer):
    """Issue 17, item 10: one refusal lists all four reasons; no number is taken, the refusal is audited with them."""
    document = unique(sample())
    document["goods"][0]["hs_code"] = "85165"
    document["sender"]["country"] = "XX"
    document["goods"][1]["net_kg"] = "1000.000"
    document["totals"]["customs_value"] = "1.00"
    submission = submit_signed(company_signer, document)
    outcome = run_steps(submission.application_id)
    assert outcome.status == "registration_refused" and outcome.registration_number is None
    assert {r["code"] for r in outcome.reasons} == {
        "HS_CODE_INVALID",
        "COUNTRY_CODE_INVALID",
        "NET_EXCEEDS_GROSS",
        "TOTALS_MISMATCH",
    }
    (refusal,) = [e for e in events(submission.application_id) if e.to_status == "registration_refused"]
    assert [r["code"] for r in refusal.reasons] == [r["code"] for r in outcome.reasons]
    with transaction() as session:
        assert session.exec(select(RegistrationCounter)).all() == []


def test_steps_are_idempotent(settings, company_signer):
    submission = submit_signed(company_signer, unique(sample()))
    first = run_steps(submission.application_id)
    _, events = counts()
    for step in (check_signatures, register_declaration, assign_lane, release_or_hold):
        again = step(submission.application_id)
        assert not again.acted and again.status == "released"
    assert counts()[1] == events
    assert declaration_status(submission.application_id)["registration_number"] == first.registration_number


def test_registration_numbers_are_sequential_per_office_and_day(settings, company_signer):
    day = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    numbers = []
    for office in ("50101", "50101", "62101", "50101"):
        document = unique(sample())
        document["customs_office"] = office
        submission = submit_signed(company_signer, document)
        numbers.append(run_steps(submission.application_id, now=day).registration_number)
    # 19:30 UTC is already the next day in Kazakhstan: a new series
    document = unique(sample())
    submission = submit_signed(company_signer, document)
    numbers.append(run_steps(submission.application_id, now=day.replace(hour=19, minute=30)).registration_number)
    assert numbers == [
        "50101/261126/0000001",
        "50101/261126/0000002",
        "62101/261126/0000001",
        "50101/261126/0000003",
        "50101/271126/0000001",
    ]


def test_a_failed_registration_leaves_no_gap(settings, company_signer, monkeypatch):
    import customs.services.steps as registration

    first = submit_signed(company_signer, unique(sample()))
    check_signatures(first.application_id)

    def explode(*args):  # fails after the serial was drawn, inside the registering transaction
        raise OperationalError("UPDATE declaration", {}, Exception("disk I/O error"))

    monkeypatch.setattr(registration, "registration_number", explode)
    with pytest.raises(OperationalError):
        register_declaration(first.application_id)
    monkeypatch.undo()
    assert declaration_status(first.application_id)["status"] == "signatures_checked"
    assert register_declaration(first.application_id).registration_number.endswith("/0000001")


# --- State machine and audit chain ----------------------------------------------------------


def test_illegal_transition_is_an_error_and_changes_nothing(settings, company_signer):
    submission = submit_signed(company_signer, unique(sample()))
    with pytest.raises(IllegalTransition) as error, transaction() as session:
        declaration = session.exec(select(Declaration).where(Declaration.application_id == submission.application_id)).one()
        declaration.move_to(session, Status.RELEASED, actor="system", at=datetime.now(UTC))
    assert "cannot go from submitted to released" in str(error.value)
    assert declaration_status(submission.application_id)["status"] == "submitted"


def test_audit_chain_verifies_and_names_the_first_altered_event(settings, company_signer):
    for _ in range(3):
        run_steps(submit_signed(company_signer, unique(sample())).application_id)
    with transaction() as session:
        check = verify_chain(session)
    assert check.intact and check.events == 15
    engine = get_engine()
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER audit_event_no_update"))  # an attacker with DDL rights
        connection.execute(text("UPDATE audit_event SET actor = 'official-7' WHERE seq = 7"))
    with transaction() as session:
        check = verify_chain(session)
    assert (check.intact, check.broken_seq) == (False, 7)
    assert "altered" in check.problem


def test_audit_chain_detects_a_removed_event(settings, company_signer):
    run_steps(submit_signed(company_signer, unique(sample())).application_id)
    with get_engine().begin() as connection:
        connection.execute(text("DROP TRIGGER audit_event_no_delete"))
        connection.execute(text("DELETE FROM audit_event WHERE seq = 3"))
    with transaction() as session:
        check = verify_chain(session)
    assert (check.intact, check.broken_seq) == (False, 4)
    assert "missing" in check.problem


def test_audit_events_are_append_only(settings, company_signer):
    submit_signed(company_signer, unique(sample()))
    for statement in ("UPDATE audit_event SET actor = 'x'", "DELETE FROM audit_event"):
        with pytest.raises((IntegrityError, OperationalError)) as error, get_engine().begin() as connection:
            connection.execute(text(statement))
        assert "append-only" in str(error.value)


def test_an_older_database_gets_the_new_columns_at_start_up(settings, company_signer):
    """A database made before a column existed is upgraded in place, its rows kept (Alembic's comparison)."""
    from customs.core.db import init_db

    application_id = submit_signed(company_signer, unique(sample())).application_id
    with get_engine().begin() as connection:
        connection.execute(text("ALTER TABLE declaration DROP COLUMN entered_by"))
        connection.execute(text("DROP INDEX ix_declaration_release_due_at"))
        connection.execute(text("ALTER TABLE declaration DROP COLUMN release_due_at"))
    init_db(settings)
    with get_engine().connect() as connection:
        columns = {row[1] for row in connection.execute(text("PRAGMA table_info(declaration)"))}
    assert {"entered_by", "release_due_at"} <= columns
    assert declaration_status(application_id)["status"] == "submitted"


def test_each_office_has_its_own_audit_chain_and_verify_names_the_broken_one(settings, company_signer):
    for office in ("50101", "62101"):
        document = unique(sample())
        document["customs_office"] = office
        run_steps(submit_signed(company_signer, document).application_id)
    with transaction() as session:
        check = verify_chain(session)
        chains = dict(session.exec(select(AuditEvent.chain, func.count()).group_by(AuditEvent.chain)).all())
    assert check.intact and check.chains == 2 and chains == {"office:50101": 5, "office:62101": 5}
    with get_engine().begin() as connection:
        connection.execute(text("DROP TRIGGER audit_event_no_update"))
        connection.execute(text("UPDATE audit_event SET actor = 'x' WHERE chain = 'office:62101' AND chain_seq = 2"))
    with transaction() as session:
        check = verify_chain(session)
    assert (check.intact, check.chain) == (False, "office:62101") and "altered" in check.problem
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 1 and "audit chain office:62101 broken" in result.output
