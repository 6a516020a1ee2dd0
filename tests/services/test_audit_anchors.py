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
    problem = only_problem()  # still a failure; told as what it is (issue 26): the database ends before the anchors
    assert problem.startswith("the database was restored to a state before the first anchor; events after it are missing")
    assert "(office:50101 events 5..6)" in problem and "or its last events were deleted" in problem


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
    with pytest.raises(
        AnchorRefused, match=r"fewer events than the last anchor signed: office:50101 \(3 events, anchor 1 signed 5\)"
    ):
        write_anchor()  # the scheduled anchor no longer signs the rewound head as it finds it (issue 26)
    assert len(anchor_lines(settings)) == 1
    assert "(office:50101 events 4..5)" in only_problem()


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
    assert "events after it are missing (office:62101 events 1..2)" in only_problem()


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
    assert check.intact and check.anchors == 2 and check.last == last and chains_intact() and check.unanchored == 4
    assert last.chains["office:50101"].seq == 5 and last.chains["office:62101"].seq == 4


def test_deleting_the_anchor_file_and_both_keys_fails_verify(settings):
    """Issue 25, item 4: the probe deleted the anchor file and both keys after rewriting an anchored event, and
    verify passed ("no anchors yet"). A database with events needs its anchors and its key."""
    assert verify_audit_anchors().intact  # a new installation: no events, no anchors, nothing expected
    append("50101", 3)
    write_anchor()
    rewrite_audit_event("office:50101", 2, actor="someone")
    for path in (settings.anchor_path, settings.anchor_key_path, settings.anchor_public_key_path):
        path.unlink()
    problems = verify_audit_anchors().problems
    assert any(
        p.startswith(f"the audit anchor file {settings.anchor_path} is missing or empty, but the database holds 3 audit events")
        for p in problems
    ), problems
    assert any(p.startswith(f"the anchor key {settings.anchor_key_path} is missing") for p in problems), problems
    settings.anchor_path.write_bytes(b"")
    assert any("is missing or empty" in p for p in verify_audit_anchors().problems)


def test_anchors_are_required_unless_the_setting_says_otherwise(settings):
    from customs.core.settings import configure

    append("50101", 1)
    assert any("the database holds 1 audit events (anchors are required" in p for p in verify_audit_anchors().problems)
    configure(settings.model_copy(update={"audit_anchor_required": False}))  # a development database
    check = verify_audit_anchors()
    assert check.intact and check.unanchored == 1


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
    assert only_problem().startswith(f"the anchor key {settings.anchor_key_path} is missing")  # on the host that signs
    assert verify_audit_anchors(public_key_file=elsewhere).intact  # a verifier elsewhere, naming its key
    settings.anchor_public_key_path.unlink()
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


# --- Issue 25, item 4: the key pinned in the configuration; a copy of the anchors elsewhere; a minute's anchors ----


def pinned(settings, key_file=None):
    """The settings with the key of ``key_file`` (default: the anchor key) pinned, as its SHA-256."""
    from customs.core.audit_anchors import load_private_key, public_key_fingerprint
    from customs.core.settings import configure

    key = load_private_key((key_file or settings.anchor_key_path).read_bytes())
    configured = settings.model_copy(update={"audit_anchor_public_key": public_key_fingerprint(key.public_key())})
    configure(configured)
    return configured


def test_a_key_and_anchors_replaced_together_fail_against_the_pinned_key(settings, tmp_path):
    append("50101", 3)
    write_anchor()
    original = tmp_path / "original-key.pem"
    shutil.copy(settings.anchor_key_path, original)
    # the attacker rewrites an event, removes the key and the anchors, and anchors the rewritten chains anew
    rewrite_audit_event("office:50101", 2, actor="someone")
    for path in (settings.anchor_path, settings.anchor_key_path, settings.anchor_public_key_path):
        path.unlink()
    write_anchor()  # a new key, beside new anchors: without a pin they agree with each other
    assert verify_audit_anchors().intact
    pinned(settings, original)
    problems = verify_audit_anchors().problems
    assert any(
        f"the anchor key {settings.anchor_key_path}" in p and "is not the key CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY pins" in p
        for p in problems
    )
    assert any(p.startswith("no key to check the audit anchors") for p in problems), problems
    with pytest.raises(AnchorRefused, match="is not the key CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY pins"):
        write_anchor()


def test_with_a_pinned_key_a_missing_key_is_not_replaced(settings):
    from customs.services.audit_anchors import ensure_anchor_key

    made = ensure_anchor_key()
    assert made.created and not made.pinned
    assert f"CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY={made.fingerprint}" in "\n".join(made.lines())  # what customs serve prints
    pinned(settings)
    kept = ensure_anchor_key()
    assert (kept.created, kept.pinned, kept.fingerprint) == (False, True, made.fingerprint) and len(kept.lines()) == 1
    append("50101", 1)
    write_anchor()
    settings.anchor_key_path.unlink()
    with pytest.raises(AnchorRefused, match="is missing, and CUSTOMS_AUDIT_ANCHOR_PUBLIC_KEY pins the key"):
        write_anchor()
    assert not settings.anchor_key_path.exists()


def test_the_pinned_key_is_its_pem_or_its_sha256():
    from pydantic import ValidationError

    from customs.core.settings import Settings

    key = Ed25519PrivateKey.generate().public_key()
    pem = public_key_pem(key).decode()
    assert Settings(audit_anchor_public_key=pem).audit_anchor_public_key == pem.strip()
    assert Settings(audit_anchor_public_key="AB" * 32).audit_anchor_public_key == "ab" * 32
    with pytest.raises(ValidationError, match="its SHA-256 in hex"):
        Settings(audit_anchor_public_key="not a key")


def with_copy(settings, tmp_path):
    from customs.core.settings import configure

    configured = settings.model_copy(update={"audit_anchor_copy_dir": tmp_path / "elsewhere"})
    configure(configured)
    return configured


def test_anchors_cut_from_the_file_are_found_in_the_copy(settings, tmp_path):
    """An event written after anchor 1 and anchored by anchor 2 is rewritten, and anchor 2 cut from the file: the
    event is then after the last local anchor, and only the copy elsewhere still signs it."""
    configured = with_copy(settings, tmp_path)
    append("50101", 3)
    write_anchor()
    append("50101", 2)
    write_anchor()
    assert configured.anchor_copy_path.read_bytes() == configured.anchor_path.read_bytes()
    rewrite_audit_event("office:50101", 5, actor="someone")
    configured.anchor_path.write_bytes(anchor_lines(configured)[0] + b"\n")
    assert verify_audit_anchors(settings).intact  # the local file alone: event 5 is not anchored any more
    problems = verify_audit_anchors().problems
    assert any(p.startswith(f"the audit anchor file {configured.anchor_path} lacks anchors 2 that its copy") for p in problems)
    assert any("audit chain office:50101 was rewritten: event 5" in p and "anchor 2 of" in p for p in problems), problems
    configured.anchor_path.unlink()  # or the whole file removed: the copy still signs every event
    problems = verify_audit_anchors().problems
    assert any("lacks anchors 1..2 that its copy" in p for p in problems), problems
    assert any("audit chain office:50101 was rewritten: event 5" in p for p in problems), problems


def test_an_anchor_file_signed_anew_with_a_stolen_key_differs_from_its_copy(settings, tmp_path):
    """Whoever holds the key can sign a new anchor file over a rewritten database; the copy elsewhere still has the
    anchors signed before."""
    configured = with_copy(settings, tmp_path)
    append("50101", 3)
    write_anchor()
    rewrite_audit_event("office:50101", 2, actor="someone")
    configured.anchor_path.unlink()
    write_anchor(settings)  # with the key, but without the copy: a new anchor 1
    assert verify_audit_anchors(settings).intact
    problems = verify_audit_anchors().problems
    assert problems == [
        f"anchor 1 differs between the audit anchor file {configured.anchor_path} and its copy "
        f"{configured.anchor_copy_path}: one of them was rewritten"
    ]


def test_the_copy_catches_up_after_it_could_not_be_reached(settings, tmp_path):
    from customs.core.settings import configure

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the copy's directory should be")
    configure(settings.model_copy(update={"audit_anchor_copy_dir": blocked}))
    append("50101", 1)
    with pytest.raises(AnchorRefused, match=r"anchor 1 was written to .* but not copied to"):
        write_anchor()
    configured = with_copy(settings, tmp_path)
    check = verify_audit_anchors()
    assert "the anchor copy" in check.problems[0] and "is missing or empty" in check.problems[0]
    append("50101", 1)
    write_anchor()  # anchor 2, and anchor 1 that the copy lacked
    assert configured.anchor_copy_path.read_bytes() == configured.anchor_path.read_bytes()
    assert verify_audit_anchors().intact
    # a copy that does not continue the local file (one of them altered) stops the copying, loudly
    configured.anchor_copy_path.write_bytes(anchor_lines(configured)[0] + b"\n" + b'{"x": 1}\n')
    append("50101", 1)
    with pytest.raises(AnchorRefused, match="does not continue it"):
        write_anchor()


def test_the_job_gate_anchors_new_events_within_the_minute(settings):
    """Between deadline-watch's anchors (every 15 minutes) every gate pass anchors what is new, so an event is
    anchored within a minute of being written and cannot be rewritten unseen after that."""
    from customs.orchestration.gate import anchor_pass
    from customs.services.audit_anchors import ensure_anchor_key

    append("50101", 2)
    assert anchor_pass(settings) is None  # no key on this host: not the anchoring host
    ensure_anchor_key()
    assert anchor_pass(settings) == "audit anchor 1: office:50101 2"
    assert anchor_pass(settings) is None  # nothing new: nothing written
    append("50101", 1)
    append("62101", 1)
    assert anchor_pass(settings) == "audit anchor 2: office:50101 3, office:62101 1"
    rewrite_audit_event("office:62101", 1, actor="someone")
    assert "audit chain office:62101 was rewritten: event 1" in only_problem()
