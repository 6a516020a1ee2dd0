"""Audit anchors (issue 15, finding 5): someone with write access to the database drops the append-only triggers,
edits an event and recomputes every later hash and the chain head, or deletes the last events and rewinds the
head. The chains then verify on their own; the anchors, signed heads kept in a file the database cannot change,
find it. SQLite per test (the ``settings`` fixture), events appended as the services append them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import select

from customs.core.audit_anchors import public_key_pem
from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.services.audit_anchors import AnchorRefused, verify_audit_anchors, write_anchor
from customs.services.queries import operations_summary, operations_summary_markdown
from models.audit import AuditEvent, AuditHead, append_event, event_hash, verify_chain
from tests.helpers import rewrite_audit_event, truncate_audit_chain


def append(office: str, count: int) -> None:
    """``count`` events on the chain of ``office``, one transaction each, as the steps write them."""
    for _ in range(count):
        with transaction() as session:
            append_event(
                session,
                application_id=f"app-{office}",
                office=office,
                event="submitted",
                to_status="submitted",
                actor="system",
                at=utcnow(),
                details={"channel": "electronic"},
            )


def chains_intact() -> bool:
    """What `customs audit verify` found before anchors: every chain recomputed from its first event."""
    with transaction() as session:
        return verify_chain(session).intact


def only_problem() -> str:
    check = verify_audit_anchors()
    assert len(check.problems) == 1, check.problems
    return check.problems[0]


def anchor_lines(settings) -> list[bytes]:
    return settings.anchor_path.read_bytes().splitlines()


def test_a_rewrite_before_the_last_anchor_is_found_though_the_chain_verifies(settings):
    append("50101", 5)
    append("62101", 3)
    first = write_anchor()
    append("50101", 2)
    write_anchor()
    assert verify_audit_anchors().intact
    rewrite_audit_event("office:50101", 3, details={"channel": "paper"})
    assert chains_intact()  # the attacker's work: the chain alone shows nothing
    problem = only_problem()
    assert problem.startswith("audit chain office:50101 was rewritten: event 5 has hash")
    assert f"anchor {first.number} of " in problem and "events 1..5 were changed" in problem


def test_a_rewrite_between_two_anchors_is_placed_after_the_anchor_that_still_agrees(settings):
    append("50101", 5)
    write_anchor()
    append("50101", 3)
    write_anchor()
    rewrite_audit_event("office:50101", 7, actor="KZ-OF-0001")
    assert chains_intact()
    problem = only_problem()
    assert "audit chain office:50101 was rewritten: event 8" in problem and "anchor 2 of" in problem
    assert "still agrees with anchor 1 of" in problem and "at event 5, so events 6..8 were changed" in problem


def test_deleting_the_last_events_and_rewinding_the_head_is_found(settings):
    append("50101", 6)
    write_anchor()
    truncate_audit_chain("office:50101", keep=4)
    assert chains_intact()
    problem = only_problem()
    assert problem.startswith("audit chain office:50101 was cut short: event 6, signed by anchor 1 of")
    assert "its head says 4 events" in problem


def test_a_cut_chain_that_grows_again_past_the_anchor_is_found_as_a_rewrite(settings):
    append("50101", 4)
    write_anchor()
    truncate_audit_chain("office:50101", keep=2)
    append("50101", 3)  # new events where the removed ones were
    assert chains_intact()
    assert "audit chain office:50101 was rewritten: event 4" in only_problem()


def test_a_rewound_chain_anchored_again_contradicts_the_earlier_anchor(settings):
    append("50101", 5)
    write_anchor()
    truncate_audit_chain("office:50101", keep=3)
    write_anchor()  # the scheduled anchor signs the rewound head, as it finds it
    problems = verify_audit_anchors().problems
    assert any("office:50101 was cut short between anchor 1 of" in p and "(5 events) and anchor 2 of" in p for p in problems)
    assert any("office:50101 was cut short: event 5, signed by anchor 1" in p for p in problems)


def test_a_whole_chain_removed_with_its_head_is_found(settings):
    from sqlalchemy import delete

    from models.audit import AuditChain

    append("50101", 2)
    append("62101", 2)
    write_anchor()
    truncate_audit_chain("office:62101", keep=0)
    with transaction() as session:
        session.execute(delete(AuditChain).where(AuditChain.chain == "office:62101"))
    assert chains_intact()
    assert "audit chain office:62101 was cut short: event 2, signed by anchor 1" in only_problem()


def test_the_legacy_chain_is_anchored_too(settings):
    """Events written before the chains were split (chain NULL, positioned by seq, head in audit_head)."""
    with transaction() as session:
        previous = "0" * 64
        for seq in (1, 2, 3):
            fields = dict(
                application_id="old",
                event="submitted",
                from_status=None,
                to_status="submitted",
                actor="system",
                at=datetime(2024, 1, seq, tzinfo=UTC),
                reasons=[],
                details={},
                prev_hash=previous,
            )
            previous = event_hash(seq=seq, **fields)
            session.add(AuditEvent(seq=seq, **fields, hash=previous))
        session.flush()
        head = session.get(AuditHead, 1)
        head.seq, head.last_hash = 3, previous
    append("50101", 1)
    write_anchor()
    assert verify_audit_anchors().intact
    rewrite_audit_event("legacy", 2, actor="someone")
    assert chains_intact()
    assert "audit chain legacy was rewritten: event 3" in only_problem()


@pytest.mark.parametrize("tamper", ["hash", "signature"])
def test_an_altered_anchor_line_is_found(settings, tamper):
    append("50101", 3)
    write_anchor()
    write_anchor()
    lines = anchor_lines(settings)
    record = json.loads(lines[0])
    if tamper == "hash":  # the attacker rewrote the database and now fits the anchor to it
        rewrite_audit_event("office:50101", 2, details={"channel": "paper"})
        with transaction() as session:
            rewritten = session.exec(
                select(AuditEvent.hash).where(AuditEvent.chain == "office:50101", AuditEvent.chain_seq == 3)
            ).one()
        lines[0] = lines[0].replace(record["chains"]["office:50101"]["last_hash"].encode(), rewritten.encode())
    else:  # a signature by another key
        forged = base64.b64encode(Ed25519PrivateKey.generate().sign(b"anything"))
        lines[0] = lines[0].replace(record["signature"].encode(), forged)
    settings.anchor_path.write_bytes(b"\n".join(lines) + b"\n")
    problems = verify_audit_anchors().problems
    assert any("line 1 (anchor 1): its signature does not verify" in p for p in problems), problems
    assert any("line 2 (anchor 2) does not link to the line before it" in p for p in problems), problems


def test_an_anchor_line_removed_in_the_middle_is_found(settings):
    for _ in range(3):
        append("50101", 1)
        write_anchor()
    lines = anchor_lines(settings)
    settings.anchor_path.write_bytes(lines[0] + b"\n" + lines[2] + b"\n")
    assert only_problem().endswith("line 2 (anchor 3) does not link to the line before it: anchor 2 was removed")


def test_events_after_the_last_anchor_left_alone_verify(settings):
    append("50101", 3)
    write_anchor()
    append("50101", 2)
    append("62101", 4)  # a chain the anchors have not seen yet
    last = write_anchor()
    append("50101", 3)
    append("00000", 1)
    check = verify_audit_anchors()
    assert check.intact and check.anchors == 2 and check.last == last and chains_intact()
    assert last.chains["office:50101"].seq == 5 and last.chains["office:62101"].seq == 4


def test_a_missing_anchor_file_fails_once_anchors_were_written(settings):
    assert verify_audit_anchors().intact  # nothing anchored yet, nothing expected
    append("50101", 1)
    write_anchor()
    settings.anchor_path.unlink()
    assert "is missing or empty, but anchors were expected: the anchor key" in only_problem()
    settings.anchor_path.write_bytes(b"")
    assert "is missing or empty" in only_problem()


def test_anchors_are_required_when_the_setting_says_so(settings):
    from customs.core.settings import configure

    configure(settings.model_copy(update={"audit_anchor_required": True}))
    assert "CUSTOMS_AUDIT_ANCHOR_REQUIRED is set" in only_problem()


def test_the_key_is_created_private_and_refused_when_others_may_read_it(settings):
    append("50101", 1)
    write_anchor()
    key = settings.anchor_key_path
    assert oct(os.stat(key).st_mode & 0o777) == oct(0o600)
    assert settings.anchor_public_key_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    os.chmod(key, 0o644)
    with pytest.raises(AnchorRefused, match="open to group or others"):
        write_anchor()
    check = verify_audit_anchors()
    assert check.intact and any("open to group or others" in w for w in check.warnings)


def test_a_verifier_with_only_the_public_key_checks_the_anchors(settings, tmp_path):
    append("50101", 2)
    write_anchor()
    elsewhere = tmp_path / "kept-elsewhere.pub.pem"
    shutil.copy(settings.anchor_public_key_path, elsewhere)
    settings.anchor_key_path.unlink()
    assert verify_audit_anchors().intact  # the public key next to the anchors
    settings.anchor_public_key_path.unlink()
    assert "no key to check the audit anchors" in only_problem()
    check = verify_audit_anchors(public_key_file=elsewhere)
    assert check.intact and check.anchors == 1
    other = tmp_path / "other.pub.pem"
    other.write_bytes(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    assert "names another signing key" in only_problem_with(other)


def only_problem_with(public_key_file) -> str:
    check = verify_audit_anchors(public_key_file=public_key_file)
    assert len(check.problems) == 1, check.problems
    return check.problems[0]


def test_a_replaced_key_does_not_continue_the_anchors(settings):
    append("50101", 1)
    write_anchor()
    settings.anchor_key_path.unlink()  # a new key would be made on the next anchor
    with pytest.raises(AnchorRefused, match="is not that of the anchor key"):
        write_anchor()


def test_the_scheduled_anchor_is_written_once_per_interval(settings):
    start = datetime(2025, 3, 1, 10, 0, 30, tzinfo=UTC)
    assert write_anchor(now=start, when_due=True).number == 1
    assert write_anchor(now=start + timedelta(minutes=14), when_due=True) is None
    assert write_anchor(now=start + timedelta(minutes=15), when_due=True).number == 2  # 10:15:30, the next interval
    assert write_anchor(now=start + timedelta(minutes=16), when_due=True) is None
    assert write_anchor(now=start + timedelta(minutes=16)).number == 3  # customs audit anchor: always


def test_anchors_written_at_once_stay_one_linked_log(settings):
    append("50101", 1)
    errors: list[BaseException] = []

    def anchor_five_times():
        try:
            for _ in range(5):
                write_anchor()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writers = [threading.Thread(target=anchor_five_times) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert errors == []
    check = verify_audit_anchors()
    assert check.intact and check.anchors == 20 and check.last.number == 20


def test_the_operations_summary_carries_the_last_anchor(settings):
    assert "No audit anchor yet" in operations_summary_markdown(operations_summary())
    append("62101", 2)
    anchor = write_anchor()
    markdown = operations_summary_markdown(operations_summary())
    assert f"Anchor {anchor.number} of " in markdown
    assert f"| office:62101 | 2 | `{anchor.chains['office:62101'].last_hash}` |" in markdown
    assert f"`{anchor.signature}`" in markdown and anchor_lines(settings)[-1].decode() in markdown
