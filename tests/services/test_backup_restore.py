"""Issue 26, backups that restore: the drill (back up mid-stream, go on clearing, restore, start) on SQLite and
PostgreSQL; after it no registration number is issued twice and no notice is sent twice, and the declarations the
backup did not have are listed with what their declarants were told."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import pytest
from sqlalchemy.exc import NoResultFound
from sqlmodel import select

from customs.core import sent_journal
from customs.core.db import transaction
from customs.services.backup import BackupError, create_backup, restore_backup
from customs.services.outbox import ALREADY_SENT, dispatch_due_sync
from customs.services.restore import restore_check
from models.audit import AuditEvent
from models.declaration import Status
from models.outbox import Notice, NoticeStatus
from tests.helpers import make_settings, run_steps, sample, stored, submit_signed, unique

ADDRESS = "broker@alatau-import.kz"


def _submit(signer) -> str:
    document = unique(sample())
    document["declarant"]["email"] = ADDRESS
    return submit_signed(signer, document).application_id


def _message_ids(smtp_server) -> Counter:
    return Counter(m["message"]["Message-ID"] for m in smtp_server.received)


def _sent_about(smtp_server, application_id: str) -> list[str]:
    """The kinds of the letters about a declaration (the operations mailbox's alerts about the service left out)."""
    return sorted(
        m["message"]["X-Customs-Notice"].split(";")[0]
        for m in smtp_server.received
        if application_id in m["raw"].decode("utf-8", "replace")
    )


def drill(settings, smtp_server, signer):
    """The drill: A cleared and announced, C submitted; backup; C cleared, B submitted and cleared (all announced);
    restore; the check; C cleared again and a new D cleared; the outbox runs."""
    first = _submit(signer)
    run_steps(first)
    dispatch_due_sync()
    caught = _submit(signer)  # submitted before the backup, registered after it
    backup = create_backup()
    run_steps(caught)
    lost = _submit(signer)  # submitted and cleared after the backup
    run_steps(lost)
    dispatch_due_sync()
    announced = {a: stored(a).registration_number for a in (first, caught, lost)}
    assert len(set(announced.values())) == 3
    sent_before = _message_ids(smtp_server)
    assert sum(sent_before.values()) == 9

    done = restore_backup(backup.folder)
    return first, caught, lost, announced, sent_before, done


def _after_the_restore(smtp_server, signer, first, caught, lost, announced, done):
    check = done["check"]
    assert check["restored"] is True
    assert [d["application_id"] for d in check["lost"]] == [lost]
    (lost_entry,) = check["lost"]
    assert lost_entry["registration_number"] == announced[lost]
    assert sorted(n["kind"] for n in lost_entry["notices"]) == ["acceptance", "registration", "release"]
    assert [d["application_id"] for d in check["behind"]] == [caught]
    assert check["behind"][0]["registration_number"] == announced[caught] and check["behind"][0]["status_now"] == "submitted"
    assert check["counters_raised"], "the office's counter must be raised past the numbers issued after the backup"
    assert [n["application_id"] for n in check["notices_marked_sent"]] == [caught]  # its acceptance, pending in the backup

    # The next start (serve after `backup restore`) lists C again, to restart it, without a second report or alert.
    started = restore_check()
    assert not started.restored and [d["application_id"] for d in started.behind] == [caught]
    assert started.behind_reported_before == 1 and started.report_file is None

    # The service goes on: C keeps the number its declarant was told, D gets a number never issued.
    run_steps(caught)
    assert stored(caught).registration_number == announced[caught]
    fresh = _submit(signer)
    run_steps(fresh)
    assert stored(fresh).registration_number not in announced.values()
    report = dispatch_due_sync()
    assert report.claimed >= 3
    ids = _message_ids(smtp_server)
    assert max(ids.values()) == 1, f"a notice was sent twice: {[k for k, v in ids.items() if v > 1]}"
    assert _sent_about(smtp_server, caught) == ["acceptance", "registration", "release"]
    assert _sent_about(smtp_server, fresh) == ["acceptance", "registration", "release"]
    with transaction() as session:
        skipped = session.exec(
            select(Notice).where(Notice.application_id == caught, Notice.server_response == ALREADY_SENT)
        ).all()
        assert {str(n.kind) for n in skipped} == {"registration", "release"}
        assert all(n.status == NoticeStatus.SENT for n in skipped)
        (event,) = session.exec(select(AuditEvent).where(AuditEvent.event == "restore_detected")).all()
        assert event.details["lost"] == [lost]

    # The operations mailbox was told, once, in the support language, with the lost and the behind.
    (alert,) = [m for m in smtp_server.received if m["message"]["X-Customs-Notice"].startswith("ops_system_alert")]
    assert alert["rcpt_tos"] == ["ops@customs.kgd.gov.kz"]
    text = alert["message"].get_body(("plain",)).get_content()
    assert "База данных отстаёт от объявленного" in alert["message"]["Subject"]
    assert f"lost: {lost} ({announced[lost]})" in text and f"behind: {caught} (submitted, announced {announced[caught]})" in text
    assert "customs backup check --record-restore" in text

    # A second start finds the database in step; the lost declaration is not listed again.
    again = restore_check()
    assert not again.restored and again.lost_reported_before == 1, again.summary()


def test_restore_drill_on_sqlite(smtp_settings, smtp_server, company_signer):
    first, caught, lost, announced, _, done = drill(smtp_settings, smtp_server, company_signer)
    assert done["database"] == "sqlite"
    assert stored(first).status == Status.RELEASED and stored(caught).status == Status.SUBMITTED
    with pytest.raises(NoResultFound):
        stored(lost)
    _after_the_restore(smtp_server, company_signer, first, caught, lost, announced, done)


@pytest.mark.postgres
def test_restore_drill_on_postgresql(pg_settings, smtp_server, company_signer):
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    from customs.core.settings import configure

    configured = pg_settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp_server.port, "smtp_timeout": 5})
    configure(configured)
    first, caught, lost, announced, _, done = drill(configured, smtp_server, company_signer)
    assert done["database"] == "postgresql"
    assert stored(caught).status == Status.SUBMITTED
    _after_the_restore(smtp_server, company_signer, first, caught, lost, announced, done)


def test_without_the_journal_a_restore_would_reissue_a_number(settings, company_signer):
    """The control: the same restore with the journal's folder emptied issues the lost declaration's number again
    (what the issue saw), so the drill above proves the journal, not luck."""
    caught = _submit(company_signer)
    backup = create_backup()
    lost = _submit(company_signer)
    run_steps(lost)
    issued = stored(lost).registration_number
    shutil.rmtree(settings.sent_journal_path)
    sent_journal.forget_indexes()
    assert not restore_backup(backup.folder)["check"]["restored"]
    run_steps(caught)
    assert stored(caught).registration_number == issued


def test_a_backup_that_was_changed_is_refused(settings, company_signer):
    run_steps(_submit(company_signer))
    backup = create_backup()
    manifest = json.loads((backup.folder / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"customs.db"}
    with open(backup.folder / "customs.db", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff")
    with pytest.raises(BackupError, match="does not match its SHA-256"):
        restore_backup(backup.folder)


def test_the_backup_keeps_the_anchors_key_private_and_restore_keeps_the_live_anchors(settings, company_signer):
    from customs.services.audit_anchors import write_anchor

    run_steps(_submit(company_signer))
    write_anchor()
    backup = create_backup()
    assert oct(os.stat(backup.folder / "audit-anchor-key.pem").st_mode & 0o777) == "0o600"
    live = settings.anchor_path.read_bytes()
    run_steps(_submit(company_signer))
    write_anchor()
    newer = settings.anchor_path.read_bytes()
    assert newer != live
    done = restore_backup(backup.folder)
    assert str(settings.anchor_path) in done["files_kept"]
    assert settings.anchor_path.read_bytes().startswith(newer)  # kept, with the restore anchor after it


def test_verify_tells_a_restore_from_a_rewrite_and_the_confirmed_restore_goes_on(settings, company_signer):
    """Issue 26: a restore older than the last anchor was reported as tampering ("was cut short"). Now verify says
    "restored to anchor N; events after it are missing"; an operator's confirmation signs a restore anchor; anchoring
    and verify go on from it; a rewrite is still a rewrite."""
    from customs.services.audit_anchors import AnchorRefused, verify_audit_anchors, write_anchor
    from tests.helpers import rewrite_audit_event

    run_steps(_submit(company_signer))
    first = write_anchor()
    backup = create_backup()
    run_steps(_submit(company_signer))
    write_anchor()
    # Restored by hand (a pg_restore, a copied file), the service not yet started: reported, not signed.
    from customs.core.db import dispose_engines

    dispose_engines()
    database = settings.data_dir / "customs.db"
    for log_file in (database.with_name("customs.db-wal"), database.with_name("customs.db-shm")):
        log_file.unlink(missing_ok=True)
    shutil.copyfile(backup.folder / "customs.db", database)
    (problem,) = verify_audit_anchors().problems
    assert problem.startswith(f"the database was restored to anchor {first.number} of ")
    assert "events after it are missing (office:50101 events" in problem and "nothing was rewritten" in problem
    with pytest.raises(AnchorRefused, match="fewer events than the last anchor"):
        write_anchor()
    started = restore_check()  # what every host does at start: the restore reported, anchoring still stopped
    assert (
        started.anchors is not None and started.anchors["recorded"] is False and started.anchors["after_anchor"] == first.number
    )
    assert verify_audit_anchors().problems == [problem]
    # The operator confirms: the restore anchor is signed, the chains go on.
    confirmed = restore_check(record=True)
    assert confirmed.anchors["recorded"] is True
    check = verify_audit_anchors()
    assert check.intact, check.problems
    assert any("records a restore of the database to anchor 1" in w for w in check.warnings)
    run_steps(_submit(company_signer))
    write_anchor()
    assert verify_audit_anchors().intact
    # A rewrite after all this is still found as one.
    rewrite_audit_event("office:50101", 2, details={"channel": "paper"})
    assert any("was rewritten" in p for p in verify_audit_anchors().problems)


def test_journal_reads_torn_lines_and_several_hosts(tmp_path):
    folder = tmp_path / "journal"
    sent_journal.append(folder, {"type": "notice", "app": "A", "uid": "u1", "key": "k1", "kind": "acceptance"})
    with open(sent_journal.host_file(folder), "ab") as handle:
        handle.write(b'{"type":"notice","app":"B","uid":"u2"')  # a crash in the middle of a line
    index = sent_journal.JournalIndex(folder).refresh()
    assert index.sent_uids == {"u1"}
    sent_journal.append(
        folder,
        {"type": "number", "app": "C", "office": "50101", "day": "2026-12-08", "serial": 7, "number": "50101/081226/0000007"},
    )
    (folder / "other-host.jsonl").write_text(json.dumps({"type": "notice", "app": "D", "uid": "u3", "kind": "release"}) + "\n")
    index.refresh()
    assert index.sent_uids == {"u1", "u3"} and index.numbers == {"50101/081226/0000007": "C"}
    assert index.serials == {("50101", "2026-12-08"): 7}
    assert index.was_sent("new-uid", "release:D:99", "release", "D")  # the same announcement under another dedup key
    assert not index.was_sent("new-uid", "support_report:D:x", "support_report", "D")
    lines = sent_journal.host_file(folder).read_bytes().splitlines()
    assert len(lines) == 3 and lines[2].startswith(b'{"app":"C"')  # the torn line was ended before the next record


def test_a_fresh_installation_finds_nothing(tmp_path, pki):
    from customs.core.db import dispose_engines, init_db
    from customs.core.settings import configure

    configured = make_settings(tmp_path / "data", pki)
    configure(configured)
    init_db(configured)
    try:
        report = restore_check()
        assert not report.restored and report.journal_records == 0 and report.report_file is None
    finally:
        configure(None)
        dispose_engines()
