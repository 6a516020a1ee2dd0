"""Notices to the applicant through the outbox, delivered to a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import email
import json
from datetime import timedelta
from email import policy

import pytest
from sqlmodel import select

from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.core.settings import configure
from customs.notices.delivery import backoff, classify_reply
from customs.notices.render import DeclarationFacts, build_message
from customs.rules import Refused
from customs.services import outbox
from customs.services.outbox import dispatch_due_sync
from customs.services.support import report_system_failure
from models.audit import AuditEvent, verify_chain
from models.declaration import Declaration, Status
from models.official_act import SignedOfficialAct
from models.outbox import Notice, NoticeKind, NoticeStatus, queue_notice
from tests.helpers import (
    INSPECTOR,
    OTHER_OFFICE,
    SUPERVISOR,
    RecordingSmtpHandler,
    SmtpServer,
    attachments,
    attempts_of,
    free_port,
    make_settings,
    notices,
    parts,
    run_steps,
    sample,
    submit_signed,
    unique,
)
from tests.helpers import (
    events as events_of,
)

ADDRESS = "broker@alatau-import.kz"


def green_declaration(signer, *, language="ru", name=None, address=ADDRESS) -> str:
    document = unique(sample())
    document["declarant"]["language"] = language
    document["declarant"]["email"] = address
    if name is not None:
        document["declarant"]["name"] = name
    return submit_signed(signer, document).application_id


# --- What is queued, and when -------------------------------------------------------------------


def test_each_transition_queues_its_notice_in_the_same_transaction(settings, company_signer):
    application_id = green_declaration(company_signer)
    assert [n.kind for n in notices(application_id)] == [NoticeKind.ACCEPTANCE]
    outcome = run_steps(application_id)
    assert outcome.status == Status.RELEASED
    queued = notices(application_id)
    assert [n.kind for n in queued] == [NoticeKind.ACCEPTANCE, NoticeKind.REGISTRATION, NoticeKind.RELEASE]
    assert {n.recipient for n in queued} == {ADDRESS} and {n.status for n in queued} == {NoticeStatus.PENDING}
    with transaction() as session:
        events = {e.seq: e for e in session.exec(select(AuditEvent).where(AuditEvent.application_id == application_id))}
    # Each notice points at the audit event of its transition, written in the same transaction.
    assert [events[n.event_seq].to_status for n in queued] == ["submitted", "registered", "released"]
    release = queued[-1]
    assert release.facts["decision_code"] == "10" and release.facts["automatic"] is True
    # Re-running the steps queues nothing more.
    run_steps(application_id)
    assert len(notices(application_id)) == 3


def test_registration_refusal_notice_lists_every_reason(settings, company_signer):
    document = unique(sample())
    document["totals"]["items"] = 9
    document["goods"][0]["net_kg"] = "99999.000"
    application_id = submit_signed(company_signer, document).application_id
    run_steps(application_id)
    refusal = notices(application_id)[-1]
    assert refusal.kind == NoticeKind.REGISTRATION_REFUSAL
    assert sorted(r["code"] for r in refusal.facts["reasons"]) == ["NET_EXCEEDS_GROSS", "TOTALS_MISMATCH"]


def test_a_value_cannot_forge_lines_in_a_refusal_letter(smtp_settings, smtp_server, company_signer):
    """Issue 15: a country code "XX\\n\\n=== РЕШЕНИЕ: ВЫПУСК РАЗРЕШЁН (код 10) ===" showed in the refusal letter
    as lines of its own. Reasons are single lines now: the value stays inside its message, escaped."""
    forged = "XX\n\n=== РЕШЕНИЕ: ВЫПУСК РАЗРЕШЁН (код 10) ===\r\nBcc: x@y.kz"
    document = unique(sample())
    document["declarant"]["email"] = ADDRESS
    document["country_of_dispatch"] = forged
    application_id = submit_signed(company_signer, document).application_id
    run_steps(application_id)
    assert notices(application_id)[-1].kind == NoticeKind.REGISTRATION_REFUSAL
    dispatch_due_sync()
    (refusal,) = [m["message"] for m in smtp_server.received if "registration_refusal" in m["message"]["X-Customs-Notice"]]
    text = refusal.get_body(("plain",)).get_content()
    lines = text.splitlines()
    assert not any(line.lstrip().startswith(("=== РЕШЕНИЕ", "Bcc:")) for line in lines), text
    assert any("XX\\n\\n=== РЕШЕНИЕ" in line for line in lines), text  # shown, escaped, on the reason's own line


def test_a_declaration_without_a_usable_address_keeps_its_notice_as_undeliverable(settings, company_signer):
    application_id = green_declaration(company_signer, address="not an address\r\nBcc: x@y.kz")
    (acceptance,) = notices(application_id)
    assert acceptance.status == NoticeStatus.UNDELIVERABLE and acceptance.recipient is None
    assert "no usable e-mail address" in acceptance.last_error
    assert dispatch_due_sync().claimed == 0


# --- Delivery to a real SMTP server ---------------------------------------------------------------


def test_green_clearance_delivers_three_notices_once(smtp_settings, smtp_server, company_signer):
    application_id = green_declaration(company_signer)
    run_steps(application_id)
    report = dispatch_due_sync()
    assert (report.claimed, report.sent) == (3, 3)
    assert dispatch_due_sync(now=utcnow() + timedelta(days=1)).claimed == 0
    assert len(smtp_server.received) == 3
    by_kind = {m["message"]["X-Customs-Notice"].split(";")[0]: m for m in smtp_server.received}
    release = by_kind["release"]
    assert release["rcpt_tos"] == [ADDRESS] and release["mail_from"] == "noreply@customs.kgd.gov.kz"
    with transaction() as session:
        declaration = session.exec(select(Declaration).where(Declaration.application_id == application_id)).one()
    decision = json.loads(attachments(release["message"])["decision.json"])
    assert decision["decision"] == "release" and decision["decision_code"] == "10" and decision["automatic"] is True
    assert decision["registration_number"] == declaration.registration_number
    assert decision["declaration_sha256"] == declaration.content_sha256
    text = parts(release["message"])
    assert declaration.registration_number in text["text/plain"] and declaration.registration_number in text["text/html"]
    stored = {n.kind: n for n in notices(application_id)}
    for kind, received in by_kind.items():
        assert received["message"]["Message-ID"] == f"<notice-{stored[kind].uid}@customs.kgd.gov.kz>"
        assert stored[kind].status == NoticeStatus.SENT and stored[kind].server_response.startswith("2.0.0")


ALL_KINDS_FACTS = {
    NoticeKind.ACCEPTANCE: {},
    NoticeKind.REGISTRATION: {"registration_number": "50101/261126/0000042", "registered_at": "2026-11-26T05:00:00+00:00"},
    NoticeKind.REGISTRATION_REFUSAL: {
        "reasons": [
            {"code": "TOTALS_MISMATCH", "path": "$.totals.items", "message": "box 5 says 9 items but the declaration lists 2"},
            {"code": "NET_EXCEEDS_GROSS", "path": "$.goods[0].net_kg", "message": "net weight exceeds gross weight"},
        ]
    },
    NoticeKind.RELEASE: {
        "registration_number": "50101/261126/0000042",
        "decision_code": "11",
        "decided_at": "2026-11-26T06:00:00+00:00",
        "decided_by": "KZ-OF-0007",
        "automatic": False,
        "official_name": "Сейткали Айгерім",
    },
    NoticeKind.RELEASE_REFUSAL: {
        "registration_number": "50101/261126/0000042",
        "decided_at": "2026-11-26T06:00:00+00:00",
        "decided_by": "KZ-OF-0007",
        "official_name": "Сейткали Айгерім",
        "grounds": [{"code": "PAYMENTS_NOT_MADE", "title": "customs payments not made or secured"}],
        "grounds_text": "VAT for item 2 unpaid",
    },
    NoticeKind.RELEASE_CANCELLATION: {
        "registration_number": "50101/261126/0000042",
        "actor": "KZ-OF-0009",
        "official_name": "Жанібеков Ерлан",
        "decision_code": "10",
        "grounds": [{"code": "CONDITIONS_NOT_MET", "title": "release conditions not met"}],
        "grounds_text": "certificate withdrawn",
    },
    NoticeKind.AWAITING_OFFICIAL: {
        "registration_number": "50101/261126/0000042",
        "registered_at": "2026-11-26T05:00:00+00:00",
        "release_due_at": "2026-11-26T09:00:00+00:00",
        "lane": "yellow",
        "zone": "ALA-TSW",
        "reasons": [{"code": "LANE_YELLOW", "path": "$", "message": "risk lane yellow: documentary control by an official"}],
    },
    NoticeKind.FAILURE_REPORTED: {"report_id": "SR261126-0A1B2C3D", "failed_step": "registration"},
    NoticeKind.SUPPORT_REPORT: {
        "report_id": "SR261126-0A1B2C3D",
        "failed_step": "registration",
        "flow_run_id": None,
        "error_description": "OperationalError: database is locked",
        "attachments": ["run-log.txt"],
    },
    NoticeKind.RELEASE_DEADLINE_ALERT: {
        "deadline_at": "2026-11-26T09:00:00+00:00",
        "minutes_left": 60,
        "lane": "yellow",
        "zone": "ALA-TSW",
        "recipient_name": "Нурланов Асхат",
        "registered_at": "2026-11-26T05:00:00+00:00",
        "waiting_reasons": [],
    },
}


@pytest.mark.parametrize("language", ["kk", "ru", "en"])
def test_every_notice_type_in_every_language_arrives_with_both_parts(smtp_settings, smtp_server, company_signer, language):
    name = "<b>Алатау</b> & «Импорт» <script>alert(1)</script>"
    application_id = green_declaration(company_signer, language=language, name=name)
    now = utcnow()
    with transaction() as session:
        for kind, facts in ALL_KINDS_FACTS.items():
            if kind == NoticeKind.ACCEPTANCE:
                continue  # queued by intake already
            queue_notice(
                session,
                application_id=application_id,
                kind=kind,
                dedup_key=f"test:{kind}:{application_id}",
                recipient=ADDRESS,
                language=language,
                facts={"event_at": now.isoformat(), **facts},
                at=now,
            )
    report = dispatch_due_sync()
    assert report.sent == len(ALL_KINDS_FACTS) and not report.errors
    received = {m["message"]["X-Customs-Notice"].split(";")[0]: m["message"] for m in smtp_server.received}
    assert set(received) == {str(k) for k in ALL_KINDS_FACTS}
    subjects = set()
    for kind, message in received.items():
        assert message["Content-Language"] == language
        subject = str(message["Subject"])
        assert subject and "\n" not in subject
        subjects.add(subject)
        body = parts(message)
        assert set(body) == {"text/plain", "text/html"}, kind
        assert application_id in body["text/plain"] and application_id in body["text/html"]
        # A name with markup is text: escaped in HTML, as written in plain text.
        assert "<script>" not in body["text/html"] and "<b>Алатау</b>" not in body["text/html"], kind
        if "Алатау" in body["text/plain"]:  # every notice that names the declarant names it as text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body["text/html"], kind
            assert name in body["text/plain"], kind
        else:
            assert kind == "release_deadline_alert"  # addressed to a supervisor, about the declaration not the declarant
        files = attachments(message)
        if kind in ("release", "release_refusal", "release_cancellation"):
            decision = json.loads(files["decision.json"])
            assert decision["decision"] == kind and decision["application_id"] == application_id
        else:
            assert "decision.json" not in files
    assert len(subjects) == len(received)  # each kind says what it is
    text = {k: parts(m)["text/plain"] for k, m in received.items()}
    assert "50101/261126/0000042" in text["registration"]
    assert "TOTALS_MISMATCH" in text["registration_refusal"] and "NET_EXCEEDS_GROSS" in text["registration_refusal"]
    assert "KZ-OF-0007" in text["release"] and "11" in text["release"]
    assert "PAYMENTS_NOT_MADE" in text["release_refusal"] and "VAT for item 2 unpaid" in text["release_refusal"]
    assert "CONDITIONS_NOT_MET" in text["release_cancellation"] and "certificate withdrawn" in text["release_cancellation"]
    assert "SR261126-0A1B2C3D" in text["failure_reported"]
    scripts = {"kk": "Кеден", "ru": "декларац", "en": "declaration"}
    assert all(scripts[language].lower() in t.lower() for t in text.values())


def test_server_down_then_up_delivers_later_exactly_once(tmp_path, pki, company_signer):
    port = free_port()
    settings = make_settings(tmp_path / "data", pki, smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=3)
    configure(settings)
    from customs.core.db import dispose_engines, init_db

    init_db(settings)
    try:
        application_id = green_declaration(company_signer)
        now = utcnow()
        report = dispatch_due_sync(now=now)
        assert (report.claimed, report.sent, report.outcomes["retry"]) == (1, 0, 1)
        (notice,) = notices(application_id)
        assert notice.status == NoticeStatus.PENDING and notice.attempts == 1
        assert notice.next_attempt_at == now + settings.outbox_backoff
        assert "Connect" in notice.last_error or "refused" in notice.last_error.lower()
        server = SmtpServer(port).start()
        try:
            assert dispatch_due_sync(now=now + timedelta(seconds=10)).claimed == 0  # still backing off
            assert dispatch_due_sync(now=now + timedelta(seconds=31)).sent == 1
            assert dispatch_due_sync(now=now + timedelta(hours=2)).claimed == 0
            assert len(server.received) == 1
            assert server.received[0]["message"]["Message-ID"] == f"<notice-{notice.uid}@customs.kgd.gov.kz>"
        finally:
            server.stop()
        assert [a.outcome for a in attempts_of(notice.id)] == ["temporary", "sent"]
    finally:
        configure(None)
        dispose_engines()


def test_a_hung_smtp_server_never_holds_up_a_clearance(tmp_path, pki, company_signer):
    """Issue 18: a server that accepts connections and never answers held each clearance 15 s per notice. A
    clearance's own pass now waits smtp_timeout_in_clearance once, then leaves notices to outbox-dispatch for
    the pause without even connecting; outbox-dispatch keeps trying with the full time-out."""
    import socket
    import threading
    import time

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: [accepted.append(hole.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
    settings = make_settings(
        tmp_path / "data",
        pki,
        smtp_host="127.0.0.1",
        smtp_port=hole.getsockname()[1],
        smtp_timeout=15,
        smtp_timeout_in_clearance=1,
    )
    configure(settings)
    from customs.core.db import dispose_engines, init_db

    init_db(settings)
    try:
        first, second = green_declaration(company_signer), green_declaration(company_signer)
        started = time.monotonic()
        report = dispatch_due_sync(application_id=first, in_clearance=True)
        assert time.monotonic() - started < settings.smtp_timeout  # the short time-out, not the 15 s one
        assert (report.claimed, report.outcomes["retry"], len(accepted)) == (1, 1, 1)
        deferred = dispatch_due_sync(application_id=second, in_clearance=True)
        assert deferred.claimed == 0 and "outbox-dispatch" in deferred.deferred
        assert len(accepted) == 1  # not even a connection
        (waiting,) = notices(second)
        assert waiting.status == NoticeStatus.PENDING and waiting.attempts == 0
        assert dispatch_due_sync(application_id=second).claimed == 1 and len(accepted) == 2  # outbox-dispatch tries
    finally:
        configure(None)
        dispose_engines()
        hole.close()
        for connection in accepted:
            connection.close()


def test_permanent_rejection_is_failed_with_the_servers_answer(smtp_settings, smtp_server, company_signer):
    smtp_server.handler.always["nobody@alatau-import.kz"] = "550 5.1.1 <nobody@alatau-import.kz>: mailbox unavailable"
    application_id = green_declaration(company_signer, address="nobody@alatau-import.kz")
    report = dispatch_due_sync()
    assert report.outcomes["failed"] == 1
    (notice,) = notices(application_id)
    assert notice.status == NoticeStatus.FAILED and notice.attempts == 1
    assert "550" in notice.last_error and "mailbox unavailable" in notice.last_error
    assert dispatch_due_sync(now=utcnow() + timedelta(days=3)).claimed == 0  # never retried
    assert smtp_server.received == []


def test_temporary_rejection_then_success(smtp_settings, smtp_server, company_signer):
    smtp_server.handler.replies[ADDRESS] = ["451 4.7.1 greylisted, try again later"]
    application_id = green_declaration(company_signer)
    now = utcnow()
    assert dispatch_due_sync(now=now).outcomes["retry"] == 1
    (notice,) = notices(application_id)
    assert notice.status == NoticeStatus.PENDING and "451" in notice.last_error
    assert dispatch_due_sync(now=now + timedelta(seconds=31)).sent == 1
    assert len(smtp_server.received) == 1
    assert [(a.attempt, a.outcome) for a in attempts_of(notice.id)] == [(1, "temporary"), (2, "sent")]


def test_temporary_failures_stop_after_the_attempt_limit(tmp_path, pki, company_signer):
    from customs.core.db import dispose_engines, init_db

    settings = make_settings(
        tmp_path / "data", pki, smtp_host="127.0.0.1", smtp_port=free_port(), smtp_timeout=2, outbox_max_attempts=3
    )
    configure(settings)
    init_db(settings)
    try:
        application_id = green_declaration(company_signer)
        now = utcnow()
        for hour in range(5):
            dispatch_due_sync(now=now + timedelta(hours=hour))
        (notice,) = notices(application_id)
        assert notice.status == NoticeStatus.FAILED and notice.attempts == 3
        assert notice.last_error.startswith("gave up after 3 attempts")
    finally:
        configure(None)
        dispose_engines()


def test_crash_between_send_and_mark_after_the_journal_does_not_send_again(
    smtp_settings, smtp_server, company_signer, monkeypatch
):
    """The dispatcher killed after the server accepted a notice and the sent journal took it, before the mark: the
    next pass finds it in the journal and marks it sent without sending it again (issue 26)."""
    application_id = green_declaration(company_signer)
    monkeypatch.setattr(outbox, "record_and_hold", _killed)
    now = utcnow()
    with pytest.raises(SystemExit):
        dispatch_due_sync(now=now)
    monkeypatch.undo()
    (notice,) = notices(application_id)
    assert notice.status == NoticeStatus.PENDING and len(smtp_server.received) == 1
    assert dispatch_due_sync(now=now + smtp_settings.outbox_lease + timedelta(seconds=1)).sent == 1
    assert len(smtp_server.received) == 1
    assert [(a.attempt, a.outcome) for a in attempts_of(notice.id)] == [(1, "unknown"), (2, "sent")]
    assert outbox.JOURNAL_HAS_IT in attempts_of(notice.id)[0].detail
    assert attempts_of(notice.id)[1].detail == outbox.ALREADY_SENT
    (notice,) = notices(application_id)
    assert notice.status == NoticeStatus.SENT


def _killed(*args, **kwargs):
    raise SystemExit("dispatcher killed after the server accepted the message")


def test_crash_between_send_and_journal_resends_the_same_message(smtp_settings, smtp_server, company_signer, monkeypatch):
    """The one window left: killed after the server accepted the message, before the sent journal took it."""
    application_id = green_declaration(company_signer)
    monkeypatch.setattr(outbox, "append", _killed)
    now = utcnow()
    with pytest.raises(SystemExit):
        dispatch_due_sync(now=now)
    monkeypatch.undo()
    assert len(smtp_server.received) == 1
    (notice,) = notices(application_id)
    assert notice.status == NoticeStatus.PENDING and notice.attempts == 1  # claimed, never marked
    # While the lease holds, no other pass takes it.
    assert dispatch_due_sync(now=now + smtp_settings.outbox_lease - timedelta(seconds=1)).claimed == 0
    assert dispatch_due_sync(now=now + smtp_settings.outbox_lease + timedelta(seconds=1)).sent == 1
    first, second = smtp_server.received
    assert first["message"]["Message-ID"] == second["message"]["Message-ID"] == f"<notice-{notice.uid}@customs.kgd.gov.kz>"
    assert first["raw"] == second["raw"]  # the receiver sees the same message twice, never two different ones
    assert dispatch_due_sync(now=now + timedelta(days=1)).claimed == 0
    # The re-send after the lost mark is on record: the attempt without an outcome, and an audit event.
    assert [(a.attempt, a.outcome) for a in attempts_of(notice.id)] == [(1, "unknown"), (2, "sent")]
    assert "perhaps after the server accepted the message" in attempts_of(notice.id)[0].detail
    with transaction() as session:
        (lost,) = session.exec(select(AuditEvent).where(AuditEvent.event == "notice_outcome_lost")).all()
        assert verify_chain(session).intact
    assert lost.application_id == application_id
    assert lost.details == {
        "notice_id": notice.id,
        "kind": "acceptance",
        "attempt": 1,
        "message_id": f"<notice-{notice.uid}@customs.kgd.gov.kz>",
        "then": "sent again with the same Message-ID",
    }


def test_a_pass_that_stalled_past_its_lease_never_sends_what_another_pass_took_over(smtp_settings, smtp_server, company_signer):
    """Pass A claims two notices and stalls in its first SMTP transaction beyond the lease (the process was
    frozen); pass B takes the second over and delivers it. A must not send it a second time: the only way a
    notice reaches its receiver twice is a lost mark (or an SMTP answer lost on the wire)."""
    from customs.notices.delivery import SmtpTransport

    first, second = green_declaration(company_signer), green_declaration(company_signer)
    now = utcnow()

    class Stalling(SmtpTransport):
        stalled = False

        async def send(self, message, sender, recipient, name):
            if not self.stalled:
                self.stalled = True  # while A is stuck, the lease has run out for everyone else: B takes over
                report = dispatch_due_sync(now=now + smtp_settings.outbox_lease + timedelta(seconds=1), application_id=second)
                assert report.sent == 1
            return await super().send(message, sender, recipient, name)

    report = dispatch_due_sync(now=now, transport=Stalling(smtp_settings))
    assert report.claimed == 2 and report.sent == 1 and report.outcomes["stale"] == 1
    received = [m["message"]["Message-ID"] for m in smtp_server.received]
    assert len(received) == 2 and len(set(received)) == 2  # each notice once
    assert {n.status for n in notices()} == {NoticeStatus.SENT}
    assert first != second


def test_a_notice_renders_to_the_same_bytes_whatever_happened_since(settings, company_signer):
    def facts_now():
        with transaction() as session:
            return DeclarationFacts.of(
                session.exec(select(Declaration).where(Declaration.application_id == application_id)).one()
            )

    application_id = green_declaration(company_signer)
    (acceptance,) = notices(application_id)
    before = build_message(acceptance, facts_now(), None, sender="a@b.kz", domain="d.kz").as_bytes()
    run_steps(application_id)  # registered and released meanwhile: the acceptance notice must not change
    after = build_message(acceptance, facts_now(), None, sender="a@b.kz", domain="d.kz").as_bytes()
    assert before == after and facts_now().registration_number is not None
    release = notices(application_id)[-1]
    one = build_message(release, facts_now(), None, sender="a@b.kz", domain="d.kz").as_bytes()
    assert one == build_message(release, facts_now(), None, sender="a@b.kz", domain="d.kz").as_bytes() and b"decision.json" in one


def test_without_smtp_notices_are_written_as_eml_files(settings, company_signer):
    application_id = green_declaration(company_signer)
    run_steps(application_id)
    assert dispatch_due_sync().sent == 3
    files = sorted((settings.data_dir / "outbox").glob("*.eml"))
    assert [f.name.split("-", 2)[1] for f in files] == ["acceptance", "registration", "release"]
    message = email.message_from_bytes(files[-1].read_bytes(), policy=policy.default)
    assert message["To"] == ADDRESS and "decision.json" in attachments(message)
    assert {n.status for n in notices(application_id)} == {NoticeStatus.SENT}


def test_an_eml_that_cannot_be_written_leaves_no_temporary_file_behind(settings, company_signer):
    """Issue 18: 278 `.part` files were left after a disk-full test, eating more of the full disk. The outbox
    folder here is a tmpfs of 8 KiB (a real ENOSPC); a write that fails removes its file."""
    import subprocess

    settings.eml_dir.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(settings.eml_dir)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here: {mounted.stderr.decode().strip()}")
    try:
        application_id = green_declaration(company_signer)
        report = dispatch_due_sync()
        assert report.outcomes["retry"] == 1 and "No space left" in report.errors[0]
        assert list(settings.eml_dir.iterdir()) == []  # neither the .eml nor a .part
        (notice,) = notices(application_id)
        assert notice.status == NoticeStatus.PENDING
        subprocess.run(["mount", "-o", "remount,size=1m", str(settings.eml_dir)], check=True)
        assert dispatch_due_sync(now=utcnow() + timedelta(minutes=5)).sent == 1  # written once there is room
        assert [p.suffix for p in settings.eml_dir.iterdir()] == [".eml"]
    finally:
        subprocess.run(["umount", "-l", str(settings.eml_dir)], capture_output=True)


def test_delivery_rules():
    assert classify_reply(250, "ok").outcome == "sent"
    assert classify_reply(550, "no such user").outcome == "permanent"
    assert classify_reply(554, "policy").outcome == "permanent"
    assert classify_reply(451, "later").outcome == "temporary"
    assert classify_reply(None, "timeout").outcome == "temporary"
    base, cap = timedelta(seconds=30), timedelta(hours=1)
    assert [backoff(n, base, cap).total_seconds() for n in (1, 2, 3, 4, 8, 20)] == [30, 60, 120, 240, 3600, 3600]


# --- Support report ---------------------------------------------------------------------------------


def test_support_report_carries_all_six_items(smtp_settings, smtp_server, company_signer):
    application_id = green_declaration(company_signer, name="ТОО «Алатау Импорт»")
    run_steps(application_id)
    with transaction() as session:
        declaration = session.exec(select(Declaration).where(Declaration.application_id == application_id)).one()
    try:
        raise ConnectionResetError("the registration service did not answer")
    except ConnectionResetError as exc:
        report = report_system_failure(
            application_id,
            step="registration",
            error=exc,
            run_log="12:00:01 ERROR step failed\n",
            flow_run_id="5f0c6a7e-0000-4000-8000-000000000001",
        )
    again = report_system_failure(
        application_id, step="registration", error="again", run_log="", flow_run_id="5f0c6a7e-0000-4000-8000-000000000001"
    )
    assert again.report_id == report.report_id and not again.created
    dispatch_due_sync()
    to_support = [m for m in smtp_server.received if m["rcpt_tos"] == ["support@customs.kgd.gov.kz"]]
    to_applicant = [m for m in smtp_server.received if "failure_reported" in m["message"]["X-Customs-Notice"]]
    assert len(to_support) == 1 and len(to_applicant) == 1
    message = to_support[0]["message"]
    text, html = parts(message)["text/plain"], parts(message)["text/html"]
    for body in (text, html):
        assert "Таможенное оформление товаров" in body  # 1. the state service
        assert declaration.registration_number in body  # 2. the application's registration number
        assert "050840001233" in body  # 3. IIN/BIN
        assert "Алатау Импорт" in body  # 4. the applicant's name
        assert "ConnectionResetError" in body and "did not answer" in body  # 5. the error
        assert "run-log.txt" in body and "declaration-state.html" in body  # 6. the screenshots' stand-ins
    files = attachments(message)
    assert files["run-log.txt"] == b"12:00:01 ERROR step failed\n"
    assert declaration.registration_number.encode() in files["declaration-state.html"]
    assert b"released" in files["declaration-state.html"]
    assert report.report_id in parts(to_applicant[0]["message"])["text/plain"]
    with transaction() as session:
        events = list(session.exec(select(AuditEvent).where(AuditEvent.event == "failure_reported")))
        assert [e.details["report_id"] for e in events] == [report.report_id]
        assert verify_chain(session).intact


# --- TLS ---------------------------------------------------------------------------------------------


def _server_certificate(directory):
    """A self-signed certificate for 127.0.0.1, written as PEM (certificate and key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_delivery_over_tls_verifies_the_server_certificate(tmp_path, pki, company_signer, security):
    import ssl

    from aiosmtpd.controller import Controller

    from customs.core.db import dispose_engines, init_db

    cert_path, key_path = _server_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    handler, port = RecordingSmtpHandler(), free_port()
    if security == "starttls":
        controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    base = dict(smtp_host="127.0.0.1", smtp_port=port, smtp_security=security, smtp_timeout=5)
    try:
        # Not trusting the server's certificate: nothing is sent, the notice waits.
        settings = make_settings(tmp_path / "data", pki, **base)
        configure(settings)
        init_db(settings)
        application_id = green_declaration(company_signer)
        now = utcnow()
        first = dispatch_due_sync(now=now)
        assert first.outcomes["retry"] == 1 and "CERTIFICATE_VERIFY_FAILED" in first.errors[0]
        # Trusting it: delivered over TLS.
        configure(make_settings(tmp_path / "data", pki, smtp_ca_file=cert_path, **base))
        assert dispatch_due_sync(now=now + timedelta(minutes=1)).sent == 1
        assert [m["rcpt_tos"] for m in handler.received] == [[ADDRESS]]
        assert notices(application_id)[0].status == NoticeStatus.SENT
    finally:
        controller.stop()
        configure(None)
        dispose_engines()


# --- Review fixes: what the server refuses for the whole session, lost leases, dead passes -----------------


def test_a_refused_session_fails_no_notice_and_puts_the_batch_back(smtp_settings, smtp_server, company_signer):
    """530 at MAIL FROM (e.g. a wrong or missing login) says nothing about the notices: they wait, untried ones uncounted."""

    async def refuse_mail(server, session, envelope, address, mail_options):
        return "530 5.7.0 Authentication required"

    smtp_server.handler.handle_MAIL = refuse_mail
    ids = [green_declaration(company_signer) for _ in range(3)]
    now = utcnow()
    report = dispatch_due_sync(now=now)
    assert (report.outcomes["retry"], report.outcomes["put_back"], report.outcomes["failed"]) == (1, 2, 0)
    queued = [n for a in ids for n in notices(a)]
    assert {n.status for n in queued} == {NoticeStatus.PENDING}
    assert sorted(n.attempts for n in queued) == [0, 0, 1]
    assert all("530" in n.last_error for n in queued)
    del smtp_server.handler.handle_MAIL  # the login is fixed
    assert dispatch_due_sync(now=now + timedelta(minutes=1)).sent == 3
    assert len(smtp_server.received) == 3


def test_a_delivery_by_a_pass_whose_lease_ran_out_still_counts(smtp_settings, smtp_server, company_signer):
    application_id = green_declaration(company_signer)
    (notice,) = notices(application_id)
    now = utcnow()
    outbox.claim_due(smtp_settings, now, 10)  # pass 1 claims (attempt 1) and stalls
    outbox.claim_due(smtp_settings, now + smtp_settings.outbox_lease + timedelta(seconds=1), 10)  # pass 2 takes over (attempt 2)
    verdict = outbox.record_attempt(smtp_settings, notice.id, 1, outbox.SendResult("sent", "250 ok"), now + timedelta(minutes=11))
    assert verdict == "sent"
    (after,) = notices(application_id)
    assert after.status == NoticeStatus.SENT  # pass 2 will not send it a third time
    assert (
        outbox.record_attempt(smtp_settings, notice.id, 2, outbox.SendResult("temporary", "451"), now + timedelta(minutes=12))
        == "stale"
    )


def test_notices_whose_passes_kept_dying_end_as_failed(smtp_settings, smtp_server, company_signer):
    application_id = green_declaration(company_signer)
    now = utcnow()
    for attempt in range(smtp_settings.outbox_max_attempts):  # each pass claims and dies before recording
        outbox.claim_due(smtp_settings, now + attempt * smtp_settings.outbox_lease * 2, 10)
    assert dispatch_due_sync(now=now + timedelta(days=1)).claimed == 0
    (notice,) = notices(application_id)
    assert notice.status == NoticeStatus.FAILED and "dispatcher stopped" in notice.last_error
    assert smtp_server.received == []


def test_a_transport_that_raises_leaves_the_notice_for_later(smtp_settings, company_signer):
    class Broken:
        async def send(self, *args):
            raise RuntimeError("disk full")

        async def close(self):
            return None

    application_id = green_declaration(company_signer)
    report = outbox.dispatch_due_sync(transport=Broken())
    assert report.outcomes["retry"] == 1
    (notice,) = notices(application_id)
    assert notice.status == NoticeStatus.PENDING and "disk full" in notice.last_error


def _database_failure(application_id, settings, *, run_count=1, now=None):
    return report_system_failure(
        application_id,
        step="registration",
        error="OperationalError: connection refused",
        run_log="",
        flow_run_id="run-1",
        run_count=run_count,
        now=now,
        settings=settings,
        hold=run_count < settings.reconcile_max_attempts,
    )


def test_a_held_failure_notice_is_sent_when_the_declaration_stayed_where_it_was(smtp_settings, smtp_server, company_signer):
    application_id = green_declaration(company_signer)
    now = utcnow()
    _database_failure(application_id, smtp_settings, now=now)
    dispatch_due_sync(now=now + timedelta(seconds=1))
    kinds = [str(n.kind) for n in notices(application_id) if n.status == NoticeStatus.SENT]
    assert sorted(kinds) == ["acceptance", "support_report"]  # support at once; the declarant's notice waits
    dispatch_due_sync(now=now + smtp_settings.failure_notice_grace + timedelta(seconds=1))
    (told,) = notices(application_id, NoticeKind.FAILURE_REPORTED)
    assert told.status == NoticeStatus.SENT  # still at the same status: recovery gave up, the declarant is told


def test_a_held_failure_notice_is_withdrawn_when_the_declaration_moved_on(smtp_settings, smtp_server, company_signer):
    application_id = green_declaration(company_signer)
    now = utcnow()
    _database_failure(application_id, smtp_settings, now=now)
    run_steps(application_id)  # healed (here by a batch-recheck restart, say): the declaration moved on
    dispatch_due_sync(now=now + smtp_settings.failure_notice_grace + timedelta(seconds=1))
    (withdrawn,) = notices(application_id, NoticeKind.FAILURE_REPORTED)
    assert withdrawn.status == NoticeStatus.WITHDRAWN and "moved on from submitted" in withdrawn.last_error
    assert [a.outcome for a in attempts_of(withdrawn.id)] == ["withdrawn"]


def test_the_declarant_hears_of_repeated_failures_once_when_the_last_attempt_fails(smtp_settings, smtp_server, company_signer):
    application_id = green_declaration(company_signer)
    now = utcnow()
    for run_count in range(1, smtp_settings.reconcile_max_attempts + 1):
        _database_failure(application_id, smtp_settings, run_count=run_count, now=now + timedelta(minutes=run_count))
    dispatch_due_sync(now=now + timedelta(minutes=10))
    told = notices(application_id, NoticeKind.FAILURE_REPORTED)
    assert [n.status for n in told] == [NoticeStatus.WITHDRAWN] * (len(told) - 1) + [NoticeStatus.SENT]
    assert len(notices(application_id, NoticeKind.SUPPORT_REPORT)) == smtp_settings.reconcile_max_attempts  # each at once


# --- Requeued by an official's signed act ------------------------------------------------------------


def _failed(application_id: str) -> int:
    """The declaration's acceptance notice, failed (as after a permanent rejection)."""
    with transaction() as session:
        notice = session.exec(select(Notice).where(Notice.application_id == application_id)).first()
        notice.status, notice.attempts, notice.last_error, notice.last_attempt_at = NoticeStatus.FAILED, 3, "550", utcnow()
        session.add(notice)
        return notice.id


def _requeue_act(officials, notice_id: int | None, official_id: str = INSPECTOR, *, since=None, to=None, **signing):
    subject = outbox.requeue_subject(notice_id, since)
    return officials.act("requeue_notice", official_id, subject=subject, choice={"to": to} if to else None, **signing)


@pytest.mark.parametrize("family", ["rsa", "gost2004"])
def test_a_notice_is_requeued_by_the_officials_signed_act(settings, company_signer, person_signer, officials, family):
    """Signed by the official it names (RSA or GOST), of the notice's office: queued again, its delivery attempt and
    the audit chain name the official and the act; another official's or a declarant's key, an official of another
    office, another notice's act: refused, audited, the notice stays failed."""
    application_id = green_declaration(company_signer)
    notice_id = _failed(application_id)
    for signer in (officials.signer(SUPERVISOR, family), company_signer, person_signer):
        with pytest.raises(Refused) as refused:
            outbox.requeue_notice(notice_id, act=_requeue_act(officials, notice_id, signed_by=signer))
        assert refused.value.code == "SIGNER_NOT_OFFICIAL" and refused.value.kind == "forbidden"
    with pytest.raises(Refused) as refused:
        outbox.requeue_notice(notice_id, act=_requeue_act(officials, notice_id, OTHER_OFFICE))
    assert refused.value.code == "OFFICE_MISMATCH"
    with pytest.raises(Refused) as refused:
        outbox.requeue_notice(notice_id, act=_requeue_act(officials, notice_id + 1))
    assert (refused.value.code, refused.value.path) == ("ACT_MISMATCH", "act.subject.notice_id")
    with pytest.raises(Refused) as refused:  # a corrected address the act does not name
        outbox.requeue_notice(notice_id, act=_requeue_act(officials, notice_id), recipient="other@alatau-import.kz")
    assert refused.value.code == "ACT_MISMATCH"
    audited = [e for e in events_of(application_id) if e.event == "official_action_refused"]
    assert [(e.actor, e.details["action"], e.reasons[0]["code"]) for e in audited] == [
        (INSPECTOR, "requeue_notice", "SIGNER_NOT_OFFICIAL"),
    ] * 3 + [
        (OTHER_OFFICE, "requeue_notice", "OFFICE_MISMATCH"),
        (INSPECTOR, "requeue_notice", "ACT_MISMATCH"),
        (INSPECTOR, "requeue_notice", "ACT_MISMATCH"),
    ]
    assert notices(application_id)[0].status == NoticeStatus.FAILED and attempts_of(notice_id) == []
    with transaction() as session:
        assert session.exec(select(SignedOfficialAct)).all() == []

    to = "customs@alatau-import.kz"
    result = outbox.requeue_notice(notice_id, act=_requeue_act(officials, notice_id, to=to, family=family), recipient=to)
    assert (result["status"], result["recipient"]) == ("pending", to)
    with transaction() as session:
        row = session.exec(select(SignedOfficialAct)).one()
        assert verify_chain(session).intact
    assert (row.act, row.official_id, row.application_id, row.id) == (
        "requeue_notice",
        INSPECTOR,
        application_id,
        result["signed_act"],
    )
    assert row.algorithm.startswith("GOST" if family != "rsa" else "RSA")
    (attempt,) = attempts_of(notice_id)
    assert attempt.outcome == "requeued" and f"official {INSPECTOR}, signed act {row.id}" in attempt.detail
    for event in ("notice_requeued", "notice_redirected"):
        (audited,) = [e for e in events_of(application_id) if e.event == event]
        assert audited.actor == INSPECTOR and audited.details["signed_act"] == row.reference()
    with pytest.raises(Refused) as refused:  # pending now: nothing to requeue (audited too)
        outbox.requeue_notice(notice_id, act=_requeue_act(officials, notice_id))
    assert (refused.value.code, refused.value.kind) == ("NOTICE_NOT_REQUEUED", "conflict")


def test_every_failed_notice_is_requeued_by_a_supervisors_signed_act(settings, company_signer, officials):
    first, second = green_declaration(company_signer), green_declaration(company_signer)
    failed = [_failed(first), _failed(second)]
    since = utcnow() - timedelta(minutes=5)
    with pytest.raises(Refused) as refused:  # an inspector queues one notice of their office, not all of them
        outbox.requeue_failed(act=_requeue_act(officials, None, INSPECTOR, since=since), since=since)
    assert refused.value.code == "ROLE_MISMATCH"
    with pytest.raises(Refused) as refused:  # signed for every failed notice, asked for those since a time
        outbox.requeue_failed(act=_requeue_act(officials, None, SUPERVISOR), since=since)
    assert refused.value.code == "ACT_MISMATCH"
    audited = [e for e in events_of("outbox") if e.event == "official_action_refused"]
    assert [(e.actor, e.reasons[0]["code"]) for e in audited] == [(INSPECTOR, "ROLE_MISMATCH"), (SUPERVISOR, "ACT_MISMATCH")]
    assert {n.status for n in notices(first) + notices(second)} == {NoticeStatus.FAILED}

    assert outbox.requeue_failed(act=_requeue_act(officials, None, SUPERVISOR, since=since), since=since) == 2
    with transaction() as session:
        row = session.exec(select(SignedOfficialAct)).one()
    assert (row.official_id, row.application_id, sorted(row.outcome["notices"])) == (SUPERVISOR, None, sorted(failed))
    for application_id, notice_id in zip((first, second), failed, strict=True):
        assert notices(application_id)[0].status == NoticeStatus.PENDING
        assert f"official {SUPERVISOR}, signed act {row.id}" in attempts_of(notice_id)[0].detail
        (audited,) = [e for e in events_of(application_id) if e.event == "notice_requeued"]
        assert audited.actor == SUPERVISOR and audited.details["signed_act"]["id"] == row.id
