"""batch-recheck and deadline-watch on a database seeded with stuck and healthy declarations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from customs.core.clock import utcnow
from customs.core.db import dispose_engines, init_db, transaction
from customs.core.settings import configure
from customs.pki.testing import CmsSigner, TestPki
from customs.services.deadlines import check_registration_deadlines
from customs.services.steps import check_signatures, register_declaration
from models.audit import AuditEvent
from models.declaration import Declaration, Status
from models.outbox import Notice, NoticeKind
from tasks.recheck import batch_recheck_run
from tests.helpers import DECLARANT_BIN, make_settings, run_steps, sample, submit_signed, unique


@pytest.fixture
def own_pki(tmp_path):
    """A PKI of this test's own: it revokes certificates."""
    pki = TestPki.create(tmp_path / "pki", now=utcnow() - timedelta(hours=1))
    configured = make_settings(tmp_path / "data", pki)
    configure(configured)
    init_db(configured)
    yield pki, configured
    configure(None)
    dispose_engines()


def signer_of(pki: TestPki, label: str) -> CmsSigner:
    issued = pki.issue(name="ТОО «Алатау Импорт»", bin=DECLARANT_BIN, label=label)
    return CmsSigner(issued.cert_path, issued.key_path, (pki.issuing_cert_path,))


def status_of(application_id: str) -> Declaration:
    with transaction() as session:
        return session.exec(select(Declaration).where(Declaration.application_id == application_id)).one()


def test_batch_recheck_restarts_the_stuck_reports_revoked_signers_and_leaves_the_healthy_alone(own_pki):
    pki, settings = own_pki
    signer = signer_of(pki, "main")
    healthy = submit_signed(signer, unique(sample())).application_id
    run_steps(healthy)
    never_started = submit_signed(signer, unique(sample())).application_id
    stopped = submit_signed(signer, unique(sample())).application_id
    check_signatures(stopped)
    register_declaration(stopped)
    waiting = submit_signed(signer, unique(sample("03-unpaid-vat.json"))).application_id
    run_steps(waiting)
    revoked_signer = signer_of(pki, "revoked-later")
    revoked_case = submit_signed(revoked_signer, unique(sample("03-unpaid-vat.json"))).application_id
    run_steps(revoked_case)
    assert status_of(revoked_case).status == Status.AWAITING_OFFICIAL and status_of(revoked_case).signature_valid
    pki.revoke(int(status_of(revoked_case).signers[0]["signer"]["serial"], 16), at=utcnow() + timedelta(minutes=1))

    restarted: list[str] = []
    later = utcnow() + timedelta(hours=5)  # past the stuck threshold and the release deadlines
    result = batch_recheck_run(restart=restarted.append, now=later, batch_size=2)
    assert result["scanned"] == 4  # every declaration not finished, read two at a time
    assert sorted(restarted) == sorted([never_started, stopped])
    by_case = {}
    for finding in result["findings"]:
        by_case.setdefault(finding["application_id"], []).append((finding["finding"], finding["action"]))
    assert healthy not in by_case
    assert by_case[never_started] == [("stuck", "restarted")]
    assert by_case[stopped] == [("stuck", "restarted")]
    assert ("release_deadline_passed", "breach_recorded") in by_case[waiting]
    assert ("signer_revoked_since", "reported") in by_case[revoked_case]
    assert status_of(waiting).release_breached_at is not None
    # Run again: the revocation was reported already, the breach is not recorded twice.
    again = batch_recheck_run(restart=None, now=later + timedelta(minutes=15))
    assert ("signer_revoked_since", "already_reported") in [
        (f["finding"], f["action"]) for f in again["findings"] if f["application_id"] == revoked_case
    ]
    assert not [f for f in again["findings"] if f["finding"] == "release_deadline_passed"]
    with transaction() as session:
        audited = session.exec(select(AuditEvent).where(AuditEvent.event == "recheck_finding")).all()
    assert [e.application_id for e in audited] == [revoked_case]


def test_a_restart_that_fails_is_reported_and_tried_again_next_time(own_pki):
    pki, settings = own_pki
    application_id = submit_signed(signer_of(pki, "s"), unique(sample())).application_id

    def prefect_down(_):
        raise ConnectionError("Prefect API unreachable")

    result = batch_recheck_run(restart=prefect_down, now=utcnow() + timedelta(minutes=11))
    (finding,) = result["findings"]
    assert (finding["application_id"], finding["action"]) == (application_id, "restart_failed") and "unreachable" in finding[
        "detail"
    ]
    restarted: list[str] = []
    batch_recheck_run(restart=restarted.append, now=utcnow() + timedelta(minutes=26))
    assert restarted == [application_id]
    assert batch_recheck_run(restart=restarted.append, now=utcnow() + timedelta(minutes=5))["findings"] == []  # not yet stuck


def test_registration_deadline_alerts_at_75_percent_and_records_the_breach(settings, company_signer):
    application_id = submit_signed(company_signer, unique(sample())).application_id
    submitted = status_of(application_id).submitted_at
    assert check_registration_deadlines(now=submitted + timedelta(minutes=89)) == {"alerted": [], "breached": []}
    assert check_registration_deadlines(now=submitted + timedelta(minutes=90))["alerted"] == [application_id]
    assert check_registration_deadlines(now=submitted + timedelta(minutes=100)) == {"alerted": [], "breached": []}
    assert check_registration_deadlines(now=submitted + timedelta(hours=2))["breached"] == [application_id]
    assert check_registration_deadlines(now=submitted + timedelta(hours=3)) == {"alerted": [], "breached": []}
    with transaction() as session:
        alerts = session.exec(
            select(Notice).where(Notice.kind == NoticeKind.REGISTRATION_DEADLINE_ALERT).order_by(Notice.id)
        ).all()
        events = [
            e.event
            for e in session.exec(select(AuditEvent).where(AuditEvent.application_id == application_id).order_by(AuditEvent.seq))
        ]
    assert [(n.recipient, n.facts["stage"]) for n in alerts] == [
        ("support@customs.kgd.gov.kz", "alert"),
        ("support@customs.kgd.gov.kz", "breach"),
    ]
    assert events == ["transition", "registration_deadline_alert", "registration_deadline_breached"]
    run_steps(application_id)  # registered at last: nothing more to watch
    assert check_registration_deadlines(now=submitted + timedelta(hours=4)) == {"alerted": [], "breached": []}


@pytest.mark.usefixtures("prefect_harness")
def test_the_batch_recheck_flow_without_a_clearance_deployment_reports_restart_failed(settings, company_signer):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.batch_recheck import batch_recheck
    from flows.clearance import CLEARANCE_DEPLOYMENT

    with get_client(sync_client=True) as client:  # another test of the session may have registered it
        try:
            client.delete_deployment(client.read_deployment_by_name(CLEARANCE_DEPLOYMENT).id)
        except ObjectNotFound:
            pass
    configure(settings.model_copy(update={"recheck_stuck_after": timedelta(seconds=0)}))
    application_id = submit_signed(company_signer, unique(sample())).application_id
    result = batch_recheck(restart=True)
    # only this test's declaration is stuck; the reconciler part also sees the runs other tests left in the
    # session's shared Prefect server (their declarations are in other databases), so those counts vary
    stuck = {key: count for key, count in result["counts"].items() if key.startswith("stuck/")}
    assert result["scanned"] == 1 and stuck == {"stuck/restart_failed": 1}, result["counts"]
    assert status_of(application_id).status == Status.SUBMITTED  # nothing lost: the next recheck tries again


@pytest.mark.usefixtures("prefect_harness")
def test_deadline_watch_publishes_the_operations_summary(settings, company_signer):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.deadline_watch import deadline_watch

    configure(settings.model_copy(update={"audit_anchor_interval": timedelta(days=1)}))  # both runs in one interval
    waiting = submit_signed(company_signer, unique(sample("03-unpaid-vat.json"))).application_id
    run_steps(waiting)
    result = deadline_watch()
    assert result["release"] == {"alerted": [], "breached": []}
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["operations-summary"])), limit=1
        )
    assert "Awaiting an official: 1" in artifact.data and status_of(waiting).registration_number in artifact.data
    # The audit anchor of this interval, written by the run and copied into the artifact; the next run in the
    # same interval writes none.
    assert result["audit_anchor"]["anchor"] == 1 and result["audit_anchor"]["chains"]["office:50101"] == 5
    assert "## Audit anchor" in artifact.data and settings.anchor_path.read_text().splitlines()[0] in artifact.data
    assert deadline_watch()["audit_anchor"] is None


def test_a_declaration_restarted_twice_without_progress_waits_for_a_person(own_pki):
    """Issue 15: a declaration whose run fails the same way every time (a signature that keeps path building
    busy past the step's time-out) was restarted by every batch-recheck, a support report each time. After two
    restarts with nothing changed it is held, reported once, until a person re-runs it."""
    from customs.services.rerun import record_rerun_event, request_rerun
    from tests.helpers import OfficialKeys

    pki, settings = own_pki
    application_id = submit_signed(signer_of(pki, "s"), unique(sample())).application_id
    restarted: list[str] = []

    def run_that_fails_at_once(app_id: str) -> None:
        restarted.append(app_id)  # a run starts and fails before any step commits: nothing about it changes

    def recheck(minutes: int) -> list[tuple[str, str]]:
        result = batch_recheck_run(restart=run_that_fails_at_once, now=utcnow() + timedelta(minutes=minutes))
        return [(f["finding"], f["action"]) for f in result["findings"]]

    assert recheck(11) == [("stuck", "restarted")]
    assert recheck(26) == [("stuck", "restarted")]
    assert recheck(41) == [("stuck", "held")]
    assert recheck(56) == [("stuck", "already_held")]
    assert restarted == [application_id, application_id]
    with transaction() as session:
        held = session.exec(select(AuditEvent).where(AuditEvent.event == "recheck_finding")).all()
    assert [(e.application_id, e.details["finding"]) for e in held] == [(application_id, "restart_held")]
    assert "customs rerun" in held[0].details["detail"]
    # A person re-runs it (an official's signed act, recorded by the run): batch-recheck may restart it again
    # (twice), then holds it again.
    plan = request_rerun(application_id, act=OfficialKeys(pki).act("rerun", "KZ-OF-0001", application_id))
    record_rerun_event(application_id, plan.rerun_act, "flow-run", 1)
    assert recheck(71) == [("stuck", "restarted")]
    assert restarted == [application_id] * 3


def test_a_declaration_that_moves_on_between_restarts_keeps_being_restarted(own_pki):
    pki, settings = own_pki
    application_id = submit_signed(signer_of(pki, "s"), unique(sample())).application_id
    steps = iter([check_signatures, register_declaration])
    restarted: list[str] = []

    def run_that_gets_one_step_further(app_id: str) -> None:
        restarted.append(app_id)
        next(steps)(app_id)

    for minutes in (11, 26, 41):
        batch_recheck_run(restart=run_that_gets_one_step_further, now=utcnow() + timedelta(minutes=minutes))
    assert restarted == [application_id] * 3  # each time it stopped somewhere else: never held


def test_a_failure_kept_while_the_database_was_away_is_reported_once_it_is_back(settings, company_signer):
    """Issue 18: 16 of 19 failures during a database outage were never reported. The run keeps its report on
    the host's disk; the worker's reconciler reports it when the database answers again, once."""
    from customs.services.support import report_spooled_failures, spool_failure
    from models.outbox import NoticeKind
    from tests.helpers import events, notices

    application_id = submit_signed(company_signer, unique(sample())).application_id
    for _ in range(2):  # the same attempt kept twice (a retried hook): one report
        spool_failure(
            application_id,
            step="registration",
            error="OperationalError: connection refused",
            run_log="INFO the run\nERROR registration failed\n",
            flow_run_id="6a1f5b2e-0000-0000-0000-000000000001",
            run_count=1,
        )
    assert len(list((settings.data_dir / "support-spool").glob("*.json"))) == 2
    assert len(report_spooled_failures()) == 2
    assert list((settings.data_dir / "support-spool").iterdir()) == []
    (report,) = notices(application_id, NoticeKind.SUPPORT_REPORT)
    assert report.facts["failed_step"] == "registration" and "connection refused" in report.facts["error_description"]
    assert len(events(application_id, "failure_reported")) == 1
    assert report_spooled_failures() == []
