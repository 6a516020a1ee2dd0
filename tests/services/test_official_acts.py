"""Officials act as themselves: every official act is a canonical document signed with the official's own NCA key
(an employee's certificate of the revenue authority), verified like a declarant's signature, kept, and audited.

RSA and GOST keys both; refused acts are audited and change nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from customs.core.clock import utcnow
from customs.core.db import find_declaration, transaction
from customs.core.reference import load_reference
from customs.core.settings import REFERENCE_DIR
from customs.pki.testing import CmsSigner
from customs.rules import Refused
from customs.rules.official_acts import act_bytes, new_act, parse_act
from customs.services.official_acts import SignedAct
from customs.services.officials import affix_mark, cancel_release, decide
from models.audit import verify_chain
from models.declaration import Status
from models.official_act import SignedOfficialAct
from tests.helpers import INSPECTOR, SUPERVISOR, events, run_steps, sample, submit_signed, unique

FAMILIES = ["rsa", "gost2004"]


def awaiting(signer) -> str:
    application_id = submit_signed(signer, unique(sample("03-unpaid-vat.json"))).application_id
    assert run_steps(application_id).status == Status.AWAITING_OFFICIAL
    return stored(application_id).registration_number


def stored(key: str):
    with transaction() as session:
        return find_declaration(session, key)


def refused_event(application_id: str) -> dict:
    return [e for e in events(application_id) if e.event == "official_action_refused"][-1]


def assert_unchanged(number: str) -> None:
    """Still waiting, decided by nobody, and no signed act kept."""
    declaration = stored(number)
    assert declaration.status == Status.AWAITING_OFFICIAL and declaration.decided_by is None
    with transaction() as session:
        assert session.exec(select(SignedOfficialAct)).all() == []


# --- The canonical document ----------------------------------------------------------------------


def test_an_act_is_canonical_bytes_and_reads_back():
    act = new_act(
        "decide", official_id=INSPECTOR, at=utcnow(), subject={"registration_number": "50101/071226/0000001"}, choice={}
    )
    raw = act_bytes(act)
    assert parse_act(raw) == act
    assert b" " not in raw.replace(b"kz.customs", b"")  # no spaces: one form only
    assert parse_act(raw.replace(b'"act":"decide"', b'"act": "decide"')).code == "ACT_MALFORMED"
    assert parse_act(b"\xff").code == "ACT_MALFORMED"
    assert parse_act(raw.replace(b"decide", b"delete")).path == "act.act"


# --- Decisions, signed --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_a_decision_signed_by_the_named_official_goes_through_and_is_kept(settings, company_signer, officials, family):
    number = awaiting(company_signer)
    act = officials.decision(number, "release", INSPECTOR, code="10", family=family)
    result = decide(number, act=act)
    assert result.status == Status.RELEASED and not result.replay
    declaration = stored(number)
    assert declaration.decided_by == INSPECTOR
    with transaction() as session:
        row = session.exec(select(SignedOfficialAct)).one()
    assert row.document == act.document and row.signature == act.signature  # kept exactly as received
    assert row.official_id == INSPECTOR and row.signer_iin == officials.reference.officials[INSPECTOR].iin
    assert row.algorithm.startswith("GOST" if family != "rsa" else "RSA")
    released = [e for e in events(declaration.application_id) if e.to_status == Status.RELEASED][0]
    assert released.actor == INSPECTOR
    assert released.details["signed_act"]["cert_serial"] == row.cert_serial
    assert released.details["signed_act"]["sha256"] == row.sha256
    # the same signed act again (a retried call) is a replay, not a second decision
    assert decide(number, act=act).replay
    with transaction() as session:
        assert verify_chain(session).intact


def test_a_refusal_is_decided_by_the_grounds_in_the_signed_act(settings, company_signer, officials):
    number = awaiting(company_signer)
    result = decide(number, act=officials.decision(number, "refuse", INSPECTOR, grounds=["PAYMENTS_NOT_MADE"]))
    assert result.status == Status.RELEASE_REFUSED
    assert [r["code"] for r in stored(number).reasons] == ["PAYMENTS_NOT_MADE"]


@pytest.mark.parametrize("family", FAMILIES)
def test_another_officials_or_a_declarants_certificate_is_refused_audited_and_changes_nothing(
    settings, company_signer, person_signer, officials, family
):
    number = awaiting(company_signer)
    application_id = stored(number).application_id
    # the supervisor's key on an act that names the inspector
    with pytest.raises(Refused) as refused:
        decide(number, act=officials.decision(number, "release", INSPECTOR, signed_by=officials.signer(SUPERVISOR, family)))
    assert refused.value.reason.code == "SIGNER_NOT_OFFICIAL" and refused.value.kind == "forbidden"
    assert refused_event(application_id).actor == INSPECTOR
    # a declarant's own certificates (a company's head, a private person)
    for signer in (company_signer, person_signer):
        with pytest.raises(Refused) as refused:
            decide(number, act=officials.decision(number, "release", INSPECTOR, signed_by=signer))
        assert refused.value.reason.code == "SIGNER_NOT_OFFICIAL"
    assert_unchanged(number)
    assert len([e for e in events(application_id) if e.event == "official_action_refused"]) == 3


def test_revoked_expired_and_auth_certificates_of_the_official_are_refused(settings, company_signer, officials, pki):
    reference = load_reference(REFERENCE_DIR)
    official, authority = reference.officials[INSPECTOR], reference.authority
    number = awaiting(company_signer)
    revoked = pki.issue_official(official, authority, label="official-revoked")
    pki.revoke(revoked.serial)
    pki.write_crl()
    expired = pki.issue_official(
        official,
        authority,
        label="official-expired",
        not_before=utcnow() - timedelta(days=400),
        not_after=utcnow() - timedelta(days=1),
    )
    auth = pki.issue_official(official, authority, label="official-auth", auth=True)
    expected = {"revoked": "CERT_REVOKED", "expired": "CERT_EXPIRED", "auth": "KEY_USAGE"}
    for name, issued in (("revoked", revoked), ("expired", expired), ("auth", auth)):
        signer = CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))
        with pytest.raises(Refused) as refused:
            decide(number, act=officials.decision(number, "release", INSPECTOR, signed_by=signer))
        assert refused.value.reason.code == expected[name], name
    assert_unchanged(number)


def test_no_signature_a_changed_byte_and_an_unsigned_form_are_refused(settings, company_signer, officials):
    number = awaiting(company_signer)
    act = officials.decision(number, "release", INSPECTOR)
    with pytest.raises(Refused) as refused:
        decide(number, act=SignedAct(act.document, b""))
    assert refused.value.reason.code == "SIGNATURE_MISSING"
    changed = act.document.replace(b'"decision":"release"', b'"decision":"refuse!"')
    with pytest.raises(Refused) as refused:
        decide(number, act=SignedAct(changed, act.signature))
    assert refused.value.reason.code in {"DIGEST_MISMATCH", "ACT_MALFORMED"}
    flipped = bytearray(act.document)
    flipped[-3] ^= 1
    with pytest.raises(Refused) as refused:
        decide(number, act=SignedAct(bytes(flipped), act.signature))
    assert refused.value.reason.code in {"DIGEST_MISMATCH", "ACT_MALFORMED"}
    assert_unchanged(number)


def test_an_act_for_another_declaration_or_another_act_or_too_old_is_refused(settings, company_signer, officials):
    number, other = awaiting(company_signer), awaiting(company_signer)
    with pytest.raises(Refused) as refused:  # signed for the other declaration
        decide(number, act=officials.decision(other, "release", INSPECTOR))
    assert refused.value.reason.code == "ACT_MISMATCH"
    with pytest.raises(Refused) as refused:  # a cancellation act given as a decision
        decide(number, act=officials.act("cancel_release", INSPECTOR, number, grounds=["DOCUMENTS_INVALID"]))
    assert refused.value.reason.code == "ACT_MISMATCH"
    with pytest.raises(Refused) as refused:  # signed 11 minutes ago: kept for later
        decide(number, act=officials.decision(number, "release", INSPECTOR, now=utcnow() - timedelta(minutes=11)))
    assert refused.value.reason.code == "ACT_STALE"
    with pytest.raises(Refused) as refused:  # the API client's official is not the act's
        decide(number, act=officials.decision(number, "release", INSPECTOR), official_id=SUPERVISOR)
    assert refused.value.reason.code == "ACT_MISMATCH"
    assert_unchanged(number)
    assert_unchanged(other)


def test_a_signed_act_serves_once(settings, company_signer, officials):
    number = awaiting(company_signer)
    mark_number = stored(submit_signed(company_signer, unique(sample())).application_id).application_id
    run_steps(mark_number)
    act = officials.act("affix_release_mark", "KZ-OF-0001", mark_number)
    affix_mark(mark_number, act=act)
    with pytest.raises(Refused) as refused:  # the same signed act again
        affix_mark(mark_number, act=act)
    assert refused.value.reason.code in {"ACT_REPLAYED", "MARK_ALREADY_AFFIXED"}
    decide(number, act=officials.decision(number, "release", INSPECTOR))
    cancel = officials.act("cancel_release", SUPERVISOR, number, grounds=["DOCUMENTS_INVALID"])
    assert cancel_release(number, act=cancel).status == Status.RELEASE_CANCELLED
    cancelled = [e for e in events(stored(number).application_id) if e.to_status == Status.RELEASE_CANCELLED][0]
    assert cancelled.actor == SUPERVISOR and cancelled.details["signed_act"]["cert_serial"]


# --- The proof in the audit trail ------------------------------------------------------------------


def test_audit_verify_names_the_official_and_certificate_of_every_decision_and_proves_it(settings, company_signer, officials):
    from typer.testing import CliRunner

    from customs.cli import app
    from customs.services.audit_anchors import write_anchor
    from customs.services.official_acts import verify_official_acts

    rsa, gost = awaiting(company_signer), awaiting(company_signer)
    decide(rsa, act=officials.decision(rsa, "release", INSPECTOR))
    decide(gost, act=officials.decision(gost, "refuse", SUPERVISOR, grounds=["PAYMENTS_NOT_MADE"], family="gost2004"))
    check = verify_official_acts()
    assert check.problems == [] and check.unsigned == []
    by_number = {a["registration_number"]: a for a in check.acts}
    assert by_number[rsa]["official_id"] == INSPECTOR and by_number[rsa]["proven"]
    assert by_number[gost]["official_id"] == SUPERVISOR and by_number[gost]["algorithm"].startswith("GOST")
    assert by_number[rsa]["cert_serial"] == format(officials.issued(INSPECTOR).serial, "x")
    write_anchor()  # what the job gate does within the minute: anchors are required once there are events
    shown = CliRunner().invoke(app, ["audit", "verify"])
    assert shown.exit_code == 0, shown.output
    assert INSPECTOR in shown.stdout and SUPERVISOR in shown.stdout and by_number[rsa]["cert_serial"] in shown.stdout
    assert "2 official acts proven" in shown.stdout
    # The stored act rewritten in the database (release -> refuse): the audit event's SHA-256 no longer matches.
    with transaction() as session:
        row = session.exec(select(SignedOfficialAct).where(SignedOfficialAct.official_id == INSPECTOR)).one()
        row.document = row.document.replace(b'"decision":"release"', b'"decision":"refuse"')
        session.add(row)
    broken = CliRunner().invoke(app, ["audit", "verify", "--quiet"])
    assert broken.exit_code == 1 and "SHA-256 differs" in broken.output, broken.output
    # Or its signature swapped for another official's over the same bytes: the signature no longer proves the act.
    with transaction() as session:
        row = session.exec(select(SignedOfficialAct).where(SignedOfficialAct.official_id == INSPECTOR)).one()
        row.document = row.document.replace(b'"decision":"refuse"', b'"decision":"release"')
        row.signature = officials.signer(SUPERVISOR).sign(row.document)
        session.add(row)
    swapped = verify_official_acts()
    assert len(swapped.problems) == 1 and "no longer proves" in swapped.problems[0]
