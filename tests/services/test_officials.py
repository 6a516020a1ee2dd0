"""Officials in the loop, as plain functions on a real database: decisions, cancellations, release marks,
deadlines, paper declarations and the re-run rules."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlmodel import select

from customs.core.clock import utcnow
from customs.core.db import transaction
from customs.rules import Refused
from customs.rules.officials import release_alert_at
from customs.rules.rerun import rerun_problem
from customs.services.deadlines import check_release_deadlines
from customs.services.intake import paper_act_subject, submit_declaration
from customs.services.officials import affix_mark, cancel_release, decide, open_marks
from customs.services.queries import declaration_status, operations_summary
from customs.services.rerun import record_rerun_event, request_rerun
from models.audit import verify_chain
from models.declaration import Declaration, Status
from models.official_act import SignedOfficialAct
from models.outbox import NoticeKind
from tests.helpers import (
    INSPECTOR,
    OTHER_OFFICE,
    OTHER_ZONE,
    SUPERVISOR,
    as_bytes,
    events,
    notices,
    run_steps,
    sample,
    stored,
    submit_signed,
    unique,
)


def awaiting(signer, **changes) -> Declaration:
    """A declaration of office 50101 with VAT unpaid: registered, green lane, waiting for an official."""
    document = unique(sample("03-unpaid-vat.json"))
    document.update(changes)
    application_id = submit_signed(signer, document).application_id
    outcome = run_steps(application_id)
    assert outcome.status == Status.AWAITING_OFFICIAL
    return stored(application_id)


def released(signer) -> Declaration:
    application_id = submit_signed(signer, unique(sample())).application_id
    assert run_steps(application_id).status == Status.RELEASED
    return stored(application_id)


# --- Decisions ----------------------------------------------------------------------------------


def test_registration_fixes_the_zone_and_the_release_deadline(settings, company_signer):
    declaration = awaiting(company_signer)
    assert declaration.zone == "ALA-TSW"  # no box 30: the office's first zone
    assert declaration.release_due_at == declaration.registered_at + timedelta(hours=4)
    red = submit_signed(company_signer, unique(sample("04-red-wine.json"))).application_id
    run_steps(red)
    assert stored(red).zone == "KHR-ROAD"  # box 30


def test_a_zone_that_is_not_the_offices_is_refused_at_registration(settings, company_signer):
    document = unique(sample())
    document["goods_location"] = {"zone": "KHR-ROAD"}
    application_id = submit_signed(company_signer, document).application_id
    outcome = run_steps(application_id)
    assert outcome.status == Status.REGISTRATION_REFUSED
    assert [(r["code"], r["path"]) for r in outcome.reasons] == [("ZONE_UNKNOWN", "$.goods_location.zone")]


def test_release_by_the_right_official(settings, company_signer, officials):
    declaration = awaiting(company_signer)
    number = declaration.registration_number
    result = decide(number, act=officials.decision(number, "release", INSPECTOR, code="11", text="security lodged"))
    assert (result.status, result.replay) == ("released", False)
    after = stored(declaration.application_id)
    assert (after.decision_code, after.decided_by, after.decision_ref) == ("11", INSPECTOR, result.decision_id)
    transition = events(declaration.application_id)[-1]
    assert (transition.to_status, transition.actor) == ("released", INSPECTOR)
    assert (
        transition.details["official_name"] == "Сейткали Айгерім Нұрланқызы"
        and transition.details["grounds_text"] == "security lodged"
    )
    (notice,) = notices(declaration.application_id, NoticeKind.RELEASE)
    assert (
        notice.facts["official_id"] == INSPECTOR and notice.facts["automatic"] is False and notice.facts["decision_code"] == "11"
    )
    assert open_marks() == []  # release marks follow automatic releases only


@pytest.mark.parametrize(
    "official,code", [(OTHER_ZONE, "ZONE_MISMATCH"), (OTHER_OFFICE, "OFFICE_MISMATCH"), ("KZ-OF-9999", "OFFICIAL_UNKNOWN")]
)
def test_an_official_of_another_zone_or_office_is_refused_and_audited(settings, company_signer, officials, official, code):
    declaration = awaiting(company_signer)
    key = officials.signer(official if official in officials.reference.officials else INSPECTOR)
    with pytest.raises(Refused) as refused:
        decide(declaration.application_id, act=officials.decision(declaration.application_id, "release", official, signed_by=key))
    assert refused.value.code == code
    assert stored(declaration.application_id).status == Status.AWAITING_OFFICIAL
    (attempt,) = events(declaration.application_id, "official_action_refused")
    assert attempt.actor == official and attempt.reasons[0]["code"] == code and attempt.details["action"] == "decide"
    assert notices(declaration.application_id, NoticeKind.RELEASE) == []


def test_refusal_needs_grounds_from_the_list(settings, company_signer, officials):
    declaration = awaiting(company_signer)
    for grounds, code in [
        ([], "GROUNDS_MISSING"),
        (["NOT_A_GROUND"], "GROUND_UNKNOWN"),
        (["DOCUMENTS_INVALID"], "GROUND_NOT_APPLICABLE"),
    ]:
        with pytest.raises(Refused) as refused:
            decide(
                declaration.application_id,
                act=officials.decision(declaration.application_id, "refuse", INSPECTOR, grounds=grounds),
            )
        assert refused.value.code == code
    with pytest.raises(Refused) as refused:
        decide(declaration.application_id, act=officials.decision(declaration.application_id, "release", INSPECTOR, code="99"))
    assert refused.value.code == "DECISION_CODE_INVALID"
    result = decide(
        declaration.application_id,
        act=officials.decision(
            declaration.application_id,
            "refuse",
            INSPECTOR,
            grounds=["PAYMENTS_NOT_MADE", "DOCUMENTS_NOT_PROVIDED"],
            text="VAT of item 3 unpaid",
        ),
    )
    assert result.status == "release_refused"
    assert [r["code"] for r in stored(declaration.application_id).reasons] == ["PAYMENTS_NOT_MADE", "DOCUMENTS_NOT_PROVIDED"]
    (notice,) = notices(declaration.application_id, NoticeKind.RELEASE_REFUSAL)
    assert [g["code"] for g in notice.facts["grounds"]] == ["PAYMENTS_NOT_MADE", "DOCUMENTS_NOT_PROVIDED"]
    assert notice.facts["grounds"][0]["title"]["ru"].startswith("таможенные платежи не уплачены")
    assert len(events(declaration.application_id, "official_action_refused")) == 4


def test_a_decision_is_given_once_and_a_replay_is_recognised(settings, company_signer, officials):
    declaration = awaiting(company_signer)
    act = officials.decision(declaration.application_id, "release", INSPECTOR)
    first = decide(declaration.application_id, act=act)
    count = len(events(declaration.application_id))
    again = decide(declaration.application_id, act=act)
    assert again.replay and again.status == first.status and len(events(declaration.application_id)) == count
    with pytest.raises(Refused) as refused:
        decide(
            declaration.application_id,
            act=officials.decision(declaration.application_id, "refuse", SUPERVISOR, grounds=["CONDITIONS_NOT_MET"]),
        )
    assert refused.value.code == "ALREADY_DECIDED" and INSPECTOR in refused.value.reason.message
    assert len(notices(declaration.application_id, NoticeKind.RELEASE)) == 1


def test_after_the_deadline_an_inspector_is_refused_a_supervisor_decides_late(settings, company_signer, officials):
    declaration = awaiting(company_signer)
    late = declaration.release_due_at + timedelta(minutes=1)
    for _ in range(2):
        with pytest.raises(Refused) as refused:
            decide(
                declaration.application_id,
                act=officials.decision(declaration.application_id, "release", INSPECTOR, now=late),
                now=late,
            )
        assert refused.value.code == "DEADLINE_PASSED"
    assert len(events(declaration.application_id, "release_deadline_breached")) == 1
    assert stored(declaration.application_id).release_breached_at == late
    alerts = notices(declaration.application_id, NoticeKind.RELEASE_DEADLINE_ALERT)
    assert [n.recipient for n in alerts] == ["a.nurlanov@kgd.gov.kz"]  # the zone's supervisor
    assert alerts[0].facts["minutes_left"] < 0 and alerts[0].facts["stage"] == "breach"
    # The goods are not stuck: the zone's supervisor may still decide, and the decision is recorded as late.
    later = late + timedelta(minutes=5)
    act = officials.decision(declaration.application_id, "release", SUPERVISOR, now=later)
    result = decide(declaration.application_id, act=act, now=later)
    assert result.status == "released"
    transition = events(declaration.application_id)[-1]
    assert transition.actor == SUPERVISOR and transition.details["late"] is True
    assert len(events(declaration.application_id, "release_deadline_breached")) == 1


def test_deadline_watch_alerts_at_75_percent_and_records_the_breach_at_100(settings, company_signer):
    declaration = awaiting(company_signer)
    alert_at = release_alert_at(declaration.registered_at, declaration.release_due_at, 0.75)
    assert alert_at == declaration.registered_at + timedelta(hours=3)
    assert check_release_deadlines(now=alert_at - timedelta(seconds=1)).alerted == []
    assert check_release_deadlines(now=alert_at).alerted == [declaration.application_id]
    assert check_release_deadlines(now=alert_at + timedelta(minutes=5)).alerted == []  # once
    (alert,) = notices(declaration.application_id, NoticeKind.RELEASE_DEADLINE_ALERT)
    assert alert.recipient == "a.nurlanov@kgd.gov.kz" and alert.facts["minutes_left"] == 60
    assert check_release_deadlines(now=declaration.release_due_at).breached == [declaration.application_id]
    assert check_release_deadlines(now=declaration.release_due_at + timedelta(hours=1)).breached == []
    assert [e.event for e in events(declaration.application_id) if e.event.startswith("release_deadline")] == [
        "release_deadline_alert",
        "release_deadline_breached",
    ]
    summary = operations_summary(now=declaration.release_due_at)
    (row,) = summary["awaiting_official"]
    assert row["breached"] and row["alerted"]
    with transaction() as session:
        assert verify_chain(session).intact


# --- Cancellation --------------------------------------------------------------------------------


def test_cancellation_of_a_release(settings, company_signer, officials):
    def cancellation(key, grounds, text=""):
        return officials.act("cancel_release", INSPECTOR, key, grounds=grounds, text=text)

    waiting = awaiting(company_signer)
    with pytest.raises(Refused) as refused:
        cancel_release(waiting.application_id, act=cancellation(waiting.application_id, ["DOCUMENTS_INVALID"]))
    assert refused.value.code == "NOT_RELEASED"
    declaration = released(company_signer)
    with pytest.raises(Refused) as refused:
        cancel_release(declaration.application_id, act=cancellation(declaration.application_id, []))
    assert refused.value.code == "GROUNDS_MISSING"
    result = cancel_release(
        declaration.registration_number,
        act=cancellation(declaration.registration_number, ["DOCUMENTS_INVALID"], text="certificate of origin forged"),
    )
    assert result.status == "release_cancelled"
    (notice,) = notices(declaration.application_id, NoticeKind.RELEASE_CANCELLATION)
    assert notice.facts["official_id"] == INSPECTOR and notice.facts["decision_code"] == "10"
    assert notice.facts["grounds_text"] == "certificate of origin forged"
    with pytest.raises(Refused) as refused:
        cancel_release(declaration.application_id, act=cancellation(declaration.application_id, ["DOCUMENTS_INVALID"]))
    assert refused.value.code == "ALREADY_CANCELLED"
    assert open_marks() == []  # the cancelled release's mark is withdrawn
    with pytest.raises(Refused) as refused:
        affix_mark(declaration.application_id, act=officials.act("affix_release_mark", INSPECTOR, declaration.application_id))
    assert refused.value.code == "RELEASE_CANCELLED"


# --- Release marks ----------------------------------------------------------------------------------


def test_release_mark_lifecycle(settings, company_signer, officials):
    first, second = released(company_signer), released(company_signer)
    assert [m["application_id"] for m in open_marks()] == [first.application_id, second.application_id]  # oldest first
    assert [m["zone"] for m in open_marks(zone="ALA-TSW")] == ["ALA-TSW", "ALA-TSW"] and open_marks(zone="ALA-AIR") == []
    with pytest.raises(Refused) as refused:
        affix_mark(first.application_id, act=officials.act("affix_release_mark", OTHER_ZONE, first.application_id))
    assert refused.value.code == "ZONE_MISMATCH"
    later = utcnow() + timedelta(hours=3)
    summary = operations_summary(now=later)
    assert summary["marks_open"] == 2 and len(summary["marks_overdue"]) == 2
    result = affix_mark(first.registration_number, act=officials.act("affix_release_mark", INSPECTOR, first.registration_number))
    assert result["affixed_by"] == INSPECTOR
    (event,) = events(first.application_id, "release_mark_affixed")
    assert event.actor == INSPECTOR and event.details["zone"] == "ALA-TSW"
    with pytest.raises(Refused) as refused:
        affix_mark(first.application_id, act=officials.act("affix_release_mark", SUPERVISOR, first.application_id))
    assert refused.value.code == "MARK_ALREADY_AFFIXED"
    assert [m["application_id"] for m in open_marks()] == [second.application_id]
    waiting = awaiting(company_signer)
    with pytest.raises(Refused) as refused:
        affix_mark(waiting.application_id, act=officials.act("affix_release_mark", INSPECTOR, waiting.application_id))
    assert refused.value.code == "NO_RELEASE_MARK"


# --- Paper declarations -------------------------------------------------------------------------------


def paper_act(officials, content: bytes, official_id: str = INSPECTOR, **signing):
    """The official's signed act entering these bytes (enter_paper_declaration)."""
    return officials.act("enter_paper_declaration", official_id, subject=paper_act_subject(content), **signing)


def test_paper_declaration_from_entry_to_release(settings, officials):
    content = as_bytes(unique(sample()))
    submission = submit_declaration(content, None, channel="paper", act=paper_act(officials, content))
    outcome = run_steps(submission.application_id)
    assert outcome.status == Status.RELEASED and outcome.registration_number.startswith("50101/")
    declaration = stored(submission.application_id)
    assert (declaration.channel, declaration.entered_by, declaration.signature_valid) == ("paper", INSPECTOR, None)
    history = declaration_status(submission.application_id)["history"]
    assert history[0]["to"] == "submitted" and history[0]["actor"] == INSPECTOR
    assert [n.kind for n in notices(submission.application_id)] == [
        NoticeKind.ACCEPTANCE,
        NoticeKind.REGISTRATION,
        NoticeKind.RELEASE,
    ]


def test_paper_declaration_still_meets_the_registration_rules(settings, officials):
    document = unique(sample())
    document["totals"]["items"] = 5
    content = as_bytes(document)
    submission = submit_declaration(content, None, channel="paper", act=paper_act(officials, content))
    outcome = run_steps(submission.application_id)
    assert outcome.status == Status.REGISTRATION_REFUSED and [r["code"] for r in outcome.reasons] == ["TOTALS_MISMATCH"]


@pytest.mark.parametrize(
    "official,signature,code",
    [
        (None, None, "SIGNATURE_MISSING"),
        ("KZ-OF-9999", None, "OFFICIAL_UNKNOWN"),
        (OTHER_OFFICE, None, "OFFICE_MISMATCH"),
        (INSPECTOR, b"signature", "PAPER_SIGNED"),
    ],
)
def test_paper_entry_is_refused_without_the_right_official(settings, officials, official, signature, code):
    content = as_bytes(unique(sample()))
    act = None
    if official is not None:
        act = paper_act(officials, content, official, signed_by=officials.signer(INSPECTOR) if official == "KZ-OF-9999" else None)
    with pytest.raises(Refused) as refused:
        submit_declaration(content, signature, channel="paper", act=act)
    assert refused.value.code == code
    with transaction() as session:
        assert session.exec(select(Declaration)).all() == []
        assert session.exec(select(SignedOfficialAct)).all() == []
    audited = [e for e in events(f"paper:{hashlib.sha256(content).hexdigest()[:34]}") if e.event == "official_action_refused"]
    assert [e.reasons[0]["code"] for e in audited] == ([] if code == "PAPER_SIGNED" else [code])


@pytest.mark.parametrize("family", ["rsa", "gost2004"])
def test_a_paper_entry_is_the_officials_signed_act(settings, company_signer, person_signer, officials, family):
    """Signed by the official it names (RSA or GOST): the application is stored with the act, and its submission
    names the official and the act; another official's or a declarant's key, another declaration's act, or an act
    of another official than the API client's: refused, audited under the paper's SHA-256, nothing stored."""
    content = as_bytes(unique(sample()))
    pseudo = f"paper:{hashlib.sha256(content).hexdigest()[:34]}"
    for signer in (officials.signer(SUPERVISOR, family), company_signer, person_signer):
        with pytest.raises(Refused) as refused:
            submit_declaration(content, None, channel="paper", act=paper_act(officials, content, signed_by=signer))
        assert refused.value.code == "SIGNER_NOT_OFFICIAL" and refused.value.kind == "forbidden"
    other = as_bytes(unique(sample()))
    with pytest.raises(Refused) as refused:  # an act entering other bytes
        submit_declaration(content, None, channel="paper", act=paper_act(officials, other))
    assert (refused.value.code, refused.value.path) == ("ACT_MISMATCH", "act.subject.declaration_sha256")
    with pytest.raises(Refused) as refused:  # the API client's official is not the act's
        submit_declaration(content, None, channel="paper", act=paper_act(officials, content), official_id=SUPERVISOR)
    assert refused.value.code == "ACT_MISMATCH"
    audited = [e for e in events(pseudo) if e.event == "official_action_refused"]
    assert [(e.actor, e.details["action"], e.reasons[0]["code"]) for e in audited] == [
        (INSPECTOR, "enter_paper_declaration", "SIGNER_NOT_OFFICIAL")
    ] * 3 + [(INSPECTOR, "enter_paper_declaration", "ACT_MISMATCH")] * 2
    with transaction() as session:
        assert session.exec(select(Declaration)).all() == [] and session.exec(select(SignedOfficialAct)).all() == []

    act = paper_act(officials, content, family=family)
    submission = submit_declaration(content, None, channel="paper", act=act, official_id=INSPECTOR)
    assert submission.created
    with transaction() as session:
        row = session.exec(select(SignedOfficialAct)).one()
        assert verify_chain(session).intact
    assert (row.act, row.official_id, row.application_id) == ("enter_paper_declaration", INSPECTOR, submission.application_id)
    assert row.document == act.document and row.algorithm.startswith("GOST" if family != "rsa" else "RSA")
    (submitted,) = [e for e in events(submission.application_id) if e.to_status == Status.SUBMITTED]
    assert submitted.actor == INSPECTOR and submitted.details["signed_act"] == row.reference()
    assert stored(submission.application_id).entered_by == INSPECTOR
    # the same call again (a retry): the same application, the act not taken twice
    again = submit_declaration(content, None, channel="paper", act=act, official_id=INSPECTOR)
    assert (again.application_id, again.created) == (submission.application_id, False)


def test_an_official_cannot_enter_an_electronic_declaration(settings, company_signer, officials):
    content = as_bytes(unique(sample()))
    with pytest.raises(Refused) as refused:
        submit_declaration(content, company_signer.sign(content), official_id=INSPECTOR)
    assert refused.value.code == "OFFICIAL_NOT_EXPECTED"
    with pytest.raises(Refused) as refused:
        submit_declaration(content, company_signer.sign(content), act=paper_act(officials, content))
    assert refused.value.code == "OFFICIAL_NOT_EXPECTED"


# --- Re-run rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,from_step,expected",
    [
        (Status.REGISTERED, None, None),
        (Status.REGISTERED, "risk_assessment", None),
        (Status.REGISTERED, "registration", "STEP_ALREADY_DONE"),
        (Status.REGISTERED, "signature_check", "STEP_ALREADY_DONE"),
        (Status.SIGNATURES_CHECKED, "release", "STEP_NOT_READY"),
        (Status.SUBMITTED, None, None),
        (Status.RELEASED, None, "NOTHING_TO_RERUN"),
        # Issue 17, item 11: a named step that is done is STEP_ALREADY_DONE, finished clearance or not
        (Status.RELEASED, "release", "STEP_ALREADY_DONE"),
        (Status.RELEASED, "registration", "STEP_ALREADY_DONE"),
        (Status.RELEASE_CANCELLED, "risk_assessment", "STEP_ALREADY_DONE"),
        (Status.REGISTRATION_REFUSED, "registration", "STEP_ALREADY_DONE"),
        (Status.REGISTRATION_REFUSED, "risk_assessment", "NOTHING_TO_RERUN"),  # never runs: not done
        (Status.REGISTRATION_REFUSED, None, "NOTHING_TO_RERUN"),
        (Status.AWAITING_OFFICIAL, None, "AWAITING_OFFICIAL"),
        (Status.AWAITING_OFFICIAL, "release", "STEP_ALREADY_DONE"),
        (Status.REGISTERED, "inspection", "STEP_UNKNOWN"),
    ],
)
def test_rerun_rules(status, from_step, expected):
    problem = rerun_problem(status, from_step, "50101/261126/0000001")
    assert (problem.code if problem else None) == expected
    if expected == "STEP_ALREADY_DONE" and from_step == "registration" and status != Status.REGISTRATION_REFUSED:
        assert "50101/261126/0000001" in problem.message and "would not register again" in problem.message


def test_rerun_of_a_done_step_of_a_released_declaration_says_which_step_is_done():
    problem = rerun_problem(Status.RELEASED, "registration", "50101/261126/0000001")
    assert (problem.code, problem.path) == ("STEP_ALREADY_DONE", "from_step")
    assert problem.message == (
        "registration is done (number 50101/261126/0000001); re-running it would not register again; "
        "the declaration is released: its clearance is finished"
    )
    waiting = rerun_problem(Status.AWAITING_OFFICIAL, "risk_assessment", "50101/261126/0000001")
    assert waiting.message == (
        "the lane is assigned and recorded; every automatic step is done; "
        "the declaration waits for an official's decision (customs decide)"
    )


# --- Re-runs, signed -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["rsa", "gost2004"])
def test_a_rerun_is_the_officials_signed_act_and_its_run_names_it(settings, company_signer, person_signer, officials, family):
    """Signed by the official it names (RSA or GOST): the act is kept and its id given to the run, whose
    clearance_rerun event names the official and the act; the id serves one run. Another official's or a
    declarant's key, or a re-run the rules refuse: audited, nothing kept."""
    application_id = submit_signed(company_signer, unique(sample())).application_id  # submitted: its steps to run
    choice = {"from_step": "signature_check"}
    for signer in (officials.signer(SUPERVISOR, family), company_signer, person_signer):
        with pytest.raises(Refused) as refused:
            request_rerun(application_id, act=officials.act("rerun", INSPECTOR, application_id, choice=choice, signed_by=signer))
        assert refused.value.code == "SIGNER_NOT_OFFICIAL" and refused.value.kind == "forbidden"
    with pytest.raises(Refused) as refused:  # the request names another step than the act
        request_rerun(
            application_id, act=officials.act("rerun", INSPECTOR, application_id, choice=choice), from_step="registration"
        )
    assert (refused.value.code, refused.value.path) == ("ACT_MISMATCH", "act.choice.from_step")
    with pytest.raises(Refused) as refused:  # the rules: registration is not done yet
        request_rerun(application_id, act=officials.act("rerun", INSPECTOR, application_id, choice={"from_step": "release"}))
    assert (refused.value.code, refused.value.kind) == ("STEP_NOT_READY", "conflict")
    audited = events(application_id, "official_action_refused")
    assert [(e.actor, e.details["action"], e.reasons[0]["code"]) for e in audited] == [
        (INSPECTOR, "rerun", "SIGNER_NOT_OFFICIAL")
    ] * 3 + [(INSPECTOR, "rerun", "ACT_MISMATCH"), (INSPECTOR, "rerun", "STEP_NOT_READY")]
    with transaction() as session:
        assert session.exec(select(SignedOfficialAct)).all() == []

    plan = request_rerun(application_id, act=officials.act("rerun", INSPECTOR, application_id, choice=choice, family=family))
    assert (plan.from_step, plan.rerun_act is not None) == ("signature_check", True)
    with transaction() as session:
        row = session.get(SignedOfficialAct, plan.rerun_act)
    assert (row.act, row.official_id, row.application_id) == ("rerun", INSPECTOR, application_id)
    assert row.algorithm.startswith("GOST" if family != "rsa" else "RSA")
    assert events(application_id, "clearance_rerun") == []  # the run records it when it starts
    record_rerun_event(application_id, plan.rerun_act, "run-1", 1)
    record_rerun_event(application_id, plan.rerun_act, "run-1", 1)  # its task again, after a commit: once
    (rerun,) = events(application_id, "clearance_rerun")
    assert rerun.actor == INSPECTOR and rerun.details["signed_act"] == row.reference()
    assert rerun.details["flow_run_id"] == "run-1" and rerun.details["from_step"] == "signature_check"
    record_rerun_event(application_id, plan.rerun_act, "run-1", 2)  # the UI's Retry of that run: not the official
    assert events(application_id, "clearance_rerun")[-1].actor == "prefect-retry"
    with pytest.raises(Refused) as refused:  # another run given the same act
        record_rerun_event(application_id, plan.rerun_act, "run-2", 1)
    assert refused.value.code == "ACT_REPLAYED"
    for wrong in (plan.rerun_act + 1000, -1):
        with pytest.raises(Refused) as refused:
            record_rerun_event(application_id, wrong, "run-3", 1)
        assert refused.value.code == "RERUN_ACT_UNKNOWN"
    other = submit_signed(company_signer, unique(sample())).application_id
    with pytest.raises(Refused) as refused:  # a re-run act of another declaration
        record_rerun_event(other, plan.rerun_act, "run-4", 1)
    assert refused.value.code == "RERUN_ACT_UNKNOWN"
    assert len(events(application_id, "clearance_rerun")) == 2
    with transaction() as session:
        assert verify_chain(session).intact


def test_a_rerun_of_a_finished_clearance_or_by_another_zone_is_refused_and_audited(settings, company_signer, officials):
    declaration = released(company_signer)
    key = declaration.registration_number
    with pytest.raises(Refused) as refused:
        request_rerun(key, act=officials.act("rerun", INSPECTOR, key))
    assert (refused.value.code, refused.value.kind) == ("NOTHING_TO_RERUN", "conflict")
    with pytest.raises(Refused) as refused:
        request_rerun(key, act=officials.act("rerun", OTHER_ZONE, key))
    assert refused.value.code == "ZONE_MISMATCH"
    audited = events(declaration.application_id, "official_action_refused")
    assert [(e.actor, e.reasons[0]["code"]) for e in audited] == [(INSPECTOR, "NOTHING_TO_RERUN"), (OTHER_ZONE, "ZONE_MISMATCH")]
