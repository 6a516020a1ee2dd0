"""Concurrency and locking on PostgreSQL: several processes register at once.

Skipped when PostgreSQL is unreachable; `.ci/run` sets CUSTOMS_REQUIRE_POSTGRES=1 so CI fails instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from customs.core.db import transaction
from customs.services.intake import submit_declaration
from models.audit import verify_chain
from models.declaration import Declaration
from tests.helpers import as_bytes, sample, unique

pytestmark = pytest.mark.postgres
WORKER = Path(__file__).parent.parent / "fixtures" / "pg_register_worker.py"


def test_concurrent_registration_from_several_processes_is_gapless_and_unique(pg_settings, company_signer, tmp_path):
    offices = ["50101", "62101"]
    ids = []
    for index in range(40):
        document = unique(sample())
        document["customs_office"] = offices[index % 2]
        content = as_bytes(document)
        ids.append(submit_declaration(content, company_signer.sign(content)).application_id)
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(ids))
    env = dict(
        os.environ,
        CUSTOMS_DATABASE_URL=pg_settings.database_url,
        CUSTOMS_TRUST_DIR=str(pg_settings.trust_dir),
        CUSTOMS_CRL_DIR=str(pg_settings.crl_dir),
        CUSTOMS_DATA_DIR=str(pg_settings.data_dir),
    )
    # four processes work through the same declarations in different orders, racing for each one
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(ids_file), str(seed)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["acted"] for r in results) == len(ids)  # each declaration registered by exactly one process

    with transaction() as session:
        declarations = session.exec(select(Declaration).where(Declaration.application_id.in_(ids))).all()
        chain = verify_chain(session)
    numbers = [d.registration_number for d in declarations]
    assert all(numbers) and len(set(numbers)) == len(ids)
    by_office = Counter(n.split("/")[0] for n in numbers)
    assert by_office == {"50101": 20, "62101": 20}
    for office in offices:
        serials = sorted(int(n.split("/")[2]) for n in numbers if n.startswith(office))
        assert serials == list(range(1, 21)), f"{office}: {serials}"
    assert chain.intact and chain.events == len(ids) * 3


def test_identical_bytes_submitted_concurrently_make_one_application(pg_settings, company_signer):
    from concurrent.futures import ThreadPoolExecutor

    content = as_bytes(unique(sample()))
    signature = company_signer.sign(content)
    with ThreadPoolExecutor(max_workers=6) as pool:
        submissions = list(pool.map(lambda _: submit_declaration(content, signature), range(6)))
    assert len({s.application_id for s in submissions}) == 1
    assert sum(s.created for s in submissions) == 1


def test_a_corrected_signature_submitted_concurrently_makes_one_new_application(pg_settings, company_signer, pki):
    """Refused for its signer; six corrected submissions at once race for attempt 2: one wins, all get it."""
    from concurrent.futures import ThreadPoolExecutor

    from customs.pki.testing import CmsSigner
    from tests.helpers import run_steps

    content = as_bytes(unique(sample()))
    other = pki.issue(name="ТОО «Другая»", bin="120303400058", label="pg-stranger")
    first = submit_declaration(content, CmsSigner(other.cert_path, other.key_path, (pki.issuing_cert_path,)).sign(content))
    assert run_steps(first.application_id).status == "registration_refused"
    signature = company_signer.sign(content)
    with ThreadPoolExecutor(max_workers=6) as pool:
        submissions = list(pool.map(lambda _: submit_declaration(content, signature), range(6)))
    assert len({s.application_id for s in submissions}) == 1 and sum(s.created for s in submissions) == 1
    assert submissions[0].application_id != first.application_id


def test_audit_events_are_append_only_on_postgres(pg_settings, company_signer):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from customs.core.db import get_engine

    content = as_bytes(unique(sample()))
    submit_declaration(content, company_signer.sign(content))
    for statement in ("UPDATE audit_event SET actor = 'x'", "DELETE FROM audit_event"):
        with pytest.raises(DBAPIError) as error, get_engine().begin() as connection:
            connection.execute(text(statement))
        assert "append-only" in str(error.value)


def test_audit_anchors_find_a_rewrite_and_a_truncation_on_postgres(pg_settings, company_signer):
    """The anchors' checks on PostgreSQL: one chain rewritten and one cut short, each so that it verifies alone."""
    from customs.services.audit_anchors import verify_audit_anchors, write_anchor
    from tests.helpers import rewrite_audit_event, run_steps, truncate_audit_chain

    for office in ("50101", "62101"):
        document = unique(sample())
        document["customs_office"] = office
        content = as_bytes(document)
        run_steps(submit_declaration(content, company_signer.sign(content)).application_id)
    write_anchor()
    assert verify_audit_anchors().intact
    rewrite_audit_event("office:50101", 2, actor="KZ-OF-0002")
    truncate_audit_chain("office:62101", keep=3)
    with transaction() as session:
        assert verify_chain(session).intact
    problems = verify_audit_anchors().problems
    assert len(problems) == 2, problems
    assert problems[0].startswith("audit chain office:50101 was rewritten: event 5")
    assert problems[1].startswith("audit chain office:62101 was cut short: event 5, signed by anchor 1")


def test_concurrent_dispatchers_send_each_notice_once(pg_settings, company_signer, smtp_server):
    """Three dispatchers share one outbox (SKIP LOCKED): every notice reaches the server exactly once."""
    import threading

    from customs.core.settings import configure
    from customs.services.outbox import dispatch_due_sync
    from models.outbox import Notice, NoticeStatus

    configure(pg_settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp_server.port, "outbox_batch_size": 7}))
    for _ in range(30):
        content = as_bytes(unique(sample()))
        submit_declaration(content, company_signer.sign(content))  # each queues its acceptance notice
    barrier = threading.Barrier(3)
    errors = []

    def dispatcher():
        barrier.wait()
        try:
            while dispatch_due_sync().claimed:
                pass
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=dispatcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    ids = Counter(m["message"]["Message-ID"] for m in smtp_server.received)
    assert len(ids) == 30 and set(ids.values()) == {1}
    with transaction() as session:
        notices = list(session.exec(select(Notice)))
    assert {n.status for n in notices} == {NoticeStatus.SENT} and {n.attempts for n in notices} == {1}


def test_audit_chains_of_different_offices_never_wait_on_each_other(pg_settings):
    """One chain per office: while a transaction holds office 50101's chain head, an act of office 62101 goes
    through at once, and another act of 50101 waits (here: gives up after its lock timeout)."""
    from datetime import UTC, datetime

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError
    from sqlmodel import Session

    from customs.core.db import get_engine
    from models.audit import append_event

    def act(session: Session, office: str) -> None:
        append_event(session, application_id=f"A-{office}", office=office, event="test", actor="system", at=datetime.now(UTC))

    engine = get_engine(pg_settings)
    with Session(engine) as holder, holder.begin():
        act(holder, "50101")  # the head row of office 50101 stays locked until this transaction ends
        with Session(engine) as other, other.begin():
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            act(other, "62101")  # another office: no wait
        with pytest.raises(OperationalError, match="lock timeout"), Session(engine) as same, same.begin():
            same.execute(text("SET LOCAL lock_timeout = '1s'"))
            act(same, "50101")
    with transaction() as session:
        check = verify_chain(session)
    assert check.intact and (check.events, check.chains) == (2, 2)


def test_attachment_names_are_sanitised_the_same_whichever_way_they_come_in(pg_settings, company_signer):
    """Issue 15: the JSON variant stored `../../etc/passwd\\x00\\r\\nX: y` as given (on PostgreSQL the NUL raised
    DataError, a 500) while multipart stripped the path. One sanitiser now, at intake, for both."""
    from customs.services.intake import IncomingAttachment
    from models.declaration import Attachment

    content = as_bytes(unique(sample()))
    invoice = b"%PDF-1.4 invoice"
    hostile = "../../etc/passwd\x00\r\nX: y"
    submitted = submit_declaration(
        content, company_signer.sign(content), [IncomingAttachment(hostile, invoice, company_signer.sign(invoice))]
    )
    with transaction() as session:
        (stored_attachment,) = session.exec(select(Attachment)).all()
    assert stored_attachment.filename == "passwd X: y"
    assert stored_attachment.content == invoice  # the bytes are untouched
    assert submitted.application_id


def test_a_nul_in_what_intake_stores_apart_is_refused_not_a_database_error(pg_settings):
    """Found by `make fuzz`: a NUL escaped in the office, the schema or the declarant's IIN/BIN reached their text
    columns, where PostgreSQL raised DataError (HTTP 500). Intake refuses it, nothing is stored."""
    from customs.rules import Refused

    content = as_bytes(unique(sample()))
    for key in ("schema", "customs_office", "bin"):
        broken = content.replace(f'"{key}": "'.encode(), f'"{key}": "\\u0000'.encode(), 1)
        with pytest.raises(Refused) as error:
            submit_declaration(broken, b"sig")
        assert error.value.code == "CHARACTER_NOT_ALLOWED", error.value
    with transaction() as session:
        assert session.exec(select(Declaration)).all() == []
