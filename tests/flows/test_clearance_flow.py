"""The clearance flow under Prefect (one session-wide test harness): one flow run per declaration,
safe to re-run, retried on database errors only."""

from __future__ import annotations

import contextlib
import json

import pytest
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from customs.services.intake import submit_declaration
from customs.services.queries import declaration_status
from flows.clearance import clearance
from tests.helpers import (
    INSPECTOR,
    as_bytes,
    attachments,
    clearance_worker,
    events,
    flow_runs_of,
    notices,
    parts,
    run_steps,
    sample,
    unique,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def submit(signer, document):
    content = as_bytes(document)
    return submit_declaration(content, signer.sign(content)).application_id


def test_green_declaration_end_to_end_is_one_named_and_tagged_flow_run(settings, company_signer):
    application_id = submit(company_signer, unique(sample()))
    result = clearance(application_id)
    assert (result["status"], result["lane"]) == ("released", "green")
    runs = flow_runs_of(application_id)
    assert len(runs) == 1
    run = runs[0]
    assert run.name == result["registration_number"]
    assert {"office:50101", "document:goods-declaration", "lane:green"} <= set(run.tags)
    assert run.state.is_completed()
    # The run sent its notices at once: acceptance, registration, release (as .eml files: no SMTP configured).
    from models.outbox import NoticeStatus

    sent = notices(application_id)
    assert [(str(n.kind), n.status) for n in sent] == [(k, NoticeStatus.SENT) for k in ("acceptance", "registration", "release")]
    assert len(list((settings.data_dir / "outbox").glob(f"*-{application_id}.eml"))) == 3


def test_refused_declaration_stops_after_registration(settings, company_signer):
    document = unique(sample())
    document["totals"]["items"] = 7
    result = clearance(submit(company_signer, document))
    assert result["status"] == "registration_refused"
    assert [r["code"] for r in result["reasons"]] == ["TOTALS_MISMATCH"]


def test_running_the_flow_twice_registers_and_releases_once(settings, company_signer):
    application_id = submit(company_signer, unique(sample()))
    first = clearance(application_id)
    events = len(declaration_status(application_id)["history"])
    second = clearance(application_id)
    assert second["registration_number"] == first["registration_number"]
    assert second["status"] == "released" and not second["acted"]
    assert len(declaration_status(application_id)["history"]) == events


def test_database_error_is_retried_and_registers_once(settings, company_signer, monkeypatch):
    import customs.services.steps as registration

    real = registration.next_serial
    calls = {"n": 0}

    def flaky(session, office, day):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("UPDATE registration_counter", {}, Exception("database is locked"))
        return real(session, office, day)

    monkeypatch.setattr(registration, "next_serial", flaky)
    result = clearance(submit(company_signer, unique(sample())))
    assert calls["n"] == 2
    assert result["status"] == "released" and result["registration_number"].endswith("/0000001")


def test_failed_step_then_rerun_continues_where_the_declaration_stands(settings, company_signer, officials, monkeypatch):
    import customs.services.steps as risk

    def broken(*args, **kwargs):
        raise RuntimeError("risk profile service unavailable")

    application_id = submit(company_signer, unique(sample()))
    monkeypatch.setattr(risk, "assess_risk", broken)
    with pytest.raises(RuntimeError):
        clearance(application_id)
    assert declaration_status(application_id)["status"] == "registered"  # not retried: a retry cannot help
    # The system failed, not the declarant: the support service got a report, the declarant a notice.
    from email import message_from_bytes, policy

    queued = {str(n.kind): n for n in notices(application_id)}
    assert queued["support_report"].facts["failed_step"] == "risk_assessment"
    assert queued["failure_reported"].facts["report_id"] == queued["support_report"].facts["report_id"]
    (report_file,) = (settings.data_dir / "outbox").glob(f"*-support_report-{application_id}.eml")
    report = message_from_bytes(report_file.read_bytes(), policy=policy.default)
    files = attachments(report)
    assert b"risk profile service unavailable" in files["run-log.txt"]  # the failed run's own log
    assert b"registered" in files["declaration-state.html"]
    assert "RuntimeError" in parts(report)["text/plain"]
    history = declaration_status(application_id)["history"]
    assert [e["details"]["report_id"] for e in history if e["to"] is None] == [queued["support_report"].facts["report_id"]]
    number = declaration_status(application_id)["registration_number"]
    monkeypatch.undo()
    # An official's signed re-run act, recorded first; the run gets its id (no parameter names a person)
    from customs.rules import Refused
    from customs.services.rerun import request_rerun

    act = officials.act("rerun", INSPECTOR, application_id, choice={"from_step": "risk_assessment"}, family="gost2004")
    plan = request_rerun(application_id, act=act)
    result = clearance(application_id, rerun_act=plan.rerun_act)
    assert (result["status"], result["registration_number"]) == ("released", number)
    transitions = [e["to"] for e in declaration_status(application_id)["history"]]
    assert transitions.count("registered") == 1 and transitions.count("released") == 1
    (rerun,) = events(application_id, "clearance_rerun")
    assert rerun.actor == INSPECTOR and rerun.details["signed_act"]["id"] == plan.rerun_act
    assert rerun.details["from_step"] == "risk_assessment" and rerun.details["signed_act"]["algorithm"].startswith("GOST")
    with pytest.raises(Refused) as refused:  # the act served its run: another run given its id records nobody
        clearance(application_id, rerun_act=plan.rerun_act)
    assert refused.value.code == "ACT_REPLAYED" and len(events(application_id, "clearance_rerun")) == 1


def test_outbox_dispatch_flow_sends_what_is_due_and_cli_requeues_a_failed_notice(settings, company_signer, officials):
    import asyncio

    from flows.outbox_dispatch import outbox_dispatch
    from models.outbox import NoticeStatus

    bad = unique(sample())
    bad["declarant"]["email"] = "broker@@alatau"  # kept, but undeliverable
    application_id = submit(company_signer, unique(sample()))
    unreachable = submit(company_signer, bad)
    result = asyncio.run(outbox_dispatch(batch_size=1))
    assert (result["claimed"], result["sent"]) == (1, 1)
    assert result["outbox"]["sent"] == 1 and result["outbox"]["undeliverable"] == 1
    assert notices(application_id)[0].status == NoticeStatus.SENT
    (stuck,) = notices(unreachable)
    runner = CliRunner()
    listed = runner.invoke(app_cli(), ["outbox", "list", "--status", "undeliverable", "--json"])
    assert [row["id"] for row in json.loads(listed.stdout)] == [stuck.id]
    signing = officials.cli_options(INSPECTOR)
    refused = runner.invoke(app_cli(), ["outbox", "requeue", str(stuck.id), *signing])
    assert refused.exit_code == 3 and "no address" in refused.output
    requeued = runner.invoke(app_cli(), ["outbox", "requeue", str(stuck.id), "--to", "broker@alatau-import.kz", *signing])
    assert requeued.exit_code == 0, requeued.output
    (redirected,) = events(unreachable, "notice_redirected")
    assert redirected.actor == INSPECTOR and redirected.details["signed_act"]["cert_serial"]
    dispatched = runner.invoke(app_cli(), ["outbox", "dispatch"])
    assert "1 sent" in dispatched.output
    assert notices(unreachable)[0].status == NoticeStatus.SENT
    again = runner.invoke(app_cli(), ["outbox", "requeue", str(stuck.id), *signing])
    assert again.exit_code == 3 and "only failed or undeliverable" in again.output


def app_cli():
    from customs.cli import app

    return app


# --- Officials: the run of the deployment suspends for the decision; a worker runs it again when woken -----------


@contextlib.contextmanager
def _waiting_under_a_worker(settings, company_signer):
    """A declaration with unpaid VAT whose clearance is a run of the clearance deployment, executed by a worker (in a
    thread here) and Suspended for a decision: yields (application id, the suspended run). There is no waiting in a
    process any more (issue 24): the resumed run is picked up by the worker again."""
    from prefect.client.orchestration import get_client

    from flows.clearance import start_clearance

    with clearance_worker() as (_, deployments), get_client(sync_client=True) as client:
        application_id = submit(company_signer, unique(sample("03-unpaid-vat.json")))
        start_clearance(application_id, deployment_id=deployments["clearance"], client=client)
        yield application_id, wait_until(lambda: _paused_run(application_id), "the flow run to suspend for a decision")


def _paused_run(application_id: str):
    runs = [r for r in flow_runs_of(application_id) if r.state and r.state.is_paused()]
    return runs[0] if runs else None


def _completed(application_id: str, run_id):
    run = next(r for r in flow_runs_of(application_id) if r.id == run_id)
    return run if run.state.is_completed() else None


def test_a_resume_in_prefect_decides_nothing_a_signed_decision_does(settings, company_signer, officials):
    """Issue 23: a waiting run has no input form; resuming it in the Prefect UI or API (with or without a forged
    decision as run input) changes nothing, is audited as refused and the run waits again; the official's decision
    signed with their own key (`customs decide --key --cert`) is recorded and wakes the run, which ends released."""
    with _waiting_under_a_worker(settings, company_signer) as (application_id, run):
        _resume_decides_nothing_a_signed_decision_does(application_id, run, officials)


def _resume_decides_nothing_a_signed_decision_does(application_id, run, officials):
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    from models.outbox import NoticeKind

    with get_client(sync_client=True) as client:
        keys = [i.key for i in client.filter_flow_run_input(flow_run_id=run.id, key_prefix="", limit=50, exclude_keys=set())]
        artifact = next(a for a in client.read_latest_artifacts(limit=200) if a.key == f"decision-{application_id.lower()}")
    assert not any(k.endswith("-schema") for k in keys), keys  # no form: nothing typed in Prefect decides
    assert "ALA-TSW" in artifact.data and "PAYMENT_NOT_PAID" in artifact.data
    # As the attacker of issue 23 did: a resume naming an official, with no signature at all.
    with get_client(sync_client=True) as client:
        client.resume_flow_run(run.id, run_input={"decision": "release", "official_id": "KZ-OF-0001"})
    refused = wait_until(lambda: events(application_id, "official_action_refused"), "the refused resume")
    assert refused[0].reasons[0]["code"] == "NO_SIGNED_DECISION" and refused[0].details["action"] == "resume"
    again = wait_until(lambda: (r := _paused_run(application_id)) and r.state.id != run.state.id and r, "the run to wait again")
    assert again.id == run.id and declaration_status(application_id)["status"] == "awaiting_official"
    resume_flow_run(run.id)  # the UI's Resume button: the same
    wait_until(lambda: len(events(application_id, "official_action_refused")) == 2, "the second refused resume")
    wait_until(lambda: (r := _paused_run(application_id)) and r.state.id != again.state.id, "the run to wait again")
    # A decision with no key to sign it is a usage error; signed with another official's key it is refused.
    unsigned = CliRunner().invoke(app_cli(), ["decide", application_id, "release", "--official", "KZ-OF-0001"])
    assert unsigned.exit_code == 2 and "--key" in unsigned.output, unsigned.output
    forged = officials.cli_options("KZ-OF-0002")
    forged[1] = "KZ-OF-0001"  # the supervisor's key on the inspector's act
    impostor = CliRunner().invoke(app_cli(), ["decide", application_id, "release", *forged, "--json"])
    assert impostor.exit_code == 3 and "SIGNER_NOT_OFFICIAL" in impostor.output, impostor.output
    # Signed by the right official: recorded, and the waiting run is woken and ends released.
    decided = CliRunner().invoke(
        app_cli(), ["decide", application_id, "release", *officials.cli_options("KZ-OF-0001"), "--code", "11", "--json"]
    )
    assert decided.exit_code == 0, decided.output
    assert json.loads(decided.stdout)["flow_runs_resumed"] == [str(run.id)]
    wait_until(lambda: _completed(application_id, run.id), "the woken run to complete")
    status = declaration_status(application_id)
    assert (status["decision_code"], status["decided_by"]) == ("11", "KZ-OF-0001")
    codes = [e.reasons[0]["code"] for e in events(application_id, "official_action_refused")]
    assert codes == ["NO_SIGNED_DECISION", "NO_SIGNED_DECISION", "SIGNER_NOT_OFFICIAL"]
    assert len(notices(application_id, NoticeKind.RELEASE)) == 1
    assert [r.id for r in flow_runs_of(application_id)] == [run.id]  # one run, never a second
    # A second decision is refused with a clear error.
    twice = CliRunner().invoke(
        app_cli(),
        ["decide", application_id, "refuse", *officials.cli_options("KZ-OF-0001"), "--grounds", "CONDITIONS_NOT_MET"],
    )
    assert twice.exit_code == 3 and "ALREADY_DECIDED" in twice.output


def test_a_decision_recorded_while_prefect_was_away_resumes_its_run_when_prefect_is_back(settings, company_signer, officials):
    """Issue 18: the decision was committed but nobody could resume the waiting run (Prefect away): it stayed
    suspended until its time-out, 28 hours later. The reconnect sweep gives it the recorded decision; the run
    recognises it as a replay and ends released, with no refused attempt and one release notice."""

    from prefect.client.orchestration import get_client

    from customs.orchestration.decisions import resume_decided_runs
    from customs.services.officials import decide
    from models.outbox import NoticeKind

    with _waiting_under_a_worker(settings, company_signer) as (application_id, run):
        # the decision is recorded as the API records it; the hook that would resume the run never got through
        decide(application_id, act=officials.decision(application_id, "release", "KZ-OF-0001", code="10"))
        assert _paused_run(application_id).id == run.id  # still waiting: nothing told it
        with get_client(sync_client=True) as client:
            assert resume_decided_runs(client) == [application_id]
        wait_until(lambda: _completed(application_id, run.id), "the woken run to complete")
    assert declaration_status(application_id)["status"] == "released"
    assert events(application_id, "official_action_refused") == []
    assert len(notices(application_id, NoticeKind.RELEASE)) == 1
    with get_client(sync_client=True) as client:
        assert resume_decided_runs(client) == []  # nothing waits any more


def test_retrying_the_failed_flow_run_as_the_ui_does_is_safe_and_audited(settings, company_signer, monkeypatch):
    """The UI's Retry puts the failed run back to AwaitingRetry and a worker runs the same flow run again."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import AwaitingRetry

    import customs.services.steps as release_step
    from models.outbox import NoticeKind

    def broken(*args, **kwargs):
        raise RuntimeError("release service unavailable")

    application_id = submit(company_signer, unique(sample()))
    monkeypatch.setattr(release_step, "decide_release", broken)
    with pytest.raises(RuntimeError):
        clearance(application_id)
    monkeypatch.undo()
    (failed,) = flow_runs_of(application_id)
    assert failed.state.is_failed() and declaration_status(application_id)["status"] == "lane_assigned"
    number = declaration_status(application_id)["registration_number"]
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(failed.id, AwaitingRetry(), force=True)
        again = client.read_flow_run(failed.id)
    result = run_flow(clearance, flow_run=again, parameters=again.parameters, return_type="result")
    assert (result["status"], result["registration_number"]) == ("released", number)
    (retried,) = flow_runs_of(application_id)  # the same flow run, run a second time
    assert retried.id == failed.id and retried.run_count == 2 and retried.state.is_completed()
    (audited,) = events(application_id, "clearance_rerun")
    assert audited.actor == "prefect-retry" and audited.details["run_count"] == 2
    assert len(notices(application_id, NoticeKind.REGISTRATION)) == 1 and len(notices(application_id, NoticeKind.RELEASE)) == 1
    assert len(notices(application_id, NoticeKind.SUPPORT_REPORT)) == 1  # the first failure, reported once


def test_a_waiting_run_whose_deadline_passes_records_the_breach_and_says_so(settings, company_signer, officials):
    from datetime import timedelta

    from prefect.client.orchestration import get_client

    from customs.core.settings import configure
    from flows.clearance import start_clearance

    # Already past its deadline and the supervisors' time after it when the run gets to the wait (a run resumed
    # late, or one started late): it records the breach and stops, as a run of the deployment, under a worker.
    configure(settings.model_copy(update={"release_deadline": timedelta(0), "decision_wait_after_deadline": timedelta(0)}))
    application_id = submit(company_signer, unique(sample("03-unpaid-vat.json")))
    with clearance_worker() as (_, deployments), get_client(sync_client=True) as client:
        started = start_clearance(application_id, deployment_id=deployments["clearance"], client=client)
        wait_until(lambda: client.read_flow_run(started.id).state.is_final(), "the run to end")
    assert len(events(application_id, "release_deadline_breached")) == 1
    assert declaration_status(application_id)["release_breached_at"] is not None
    (run,) = flow_runs_of(application_id)
    assert run.state.is_failed() and "no decision by" in (run.state.message or "")
    # The supervisor can still decide afterwards, with no run waiting.
    late = CliRunner().invoke(app_cli(), ["decide", application_id, "release", *officials.cli_options("KZ-OF-0002"), "--json"])
    assert late.exit_code == 0, late.output
    assert json.loads(late.stdout)["status"] == "released"


def test_the_reconciler_reruns_crashed_runs_and_closes_runs_of_final_declarations(settings, company_signer, officials):
    """A run whose worker died (Crashed) runs again; a run left suspended after its declaration was decided through
    the API is closed; a run waiting as it should is left alone. Each action is audited once and listed by ops."""
    from datetime import timedelta

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running, Suspended

    from customs.core.settings import configure
    from customs.orchestration.deployments import read_deployments, register_deployments
    from customs.services.officials import decide
    from customs.services.queries import operations_summary
    from flows.clearance import start_clearance
    from tasks.reconcile import reconcile_clearance_runs

    configure(settings.model_copy(update={"reconcile_after": timedelta(0)}))
    (deployment_id, _) = register_deployments([s for s in read_deployments() if s.name == "clearance"])["clearance"]
    crashed = submit(company_signer, unique(sample()))
    decided = submit(company_signer, unique(sample("03-unpaid-vat.json")))
    waiting = submit(company_signer, unique(sample("03-unpaid-vat.json")))
    run_steps(decided)
    run_steps(waiting)
    decide(decided, act=officials.decision(decided, "release", INSPECTOR))
    with get_client(sync_client=True) as client:
        runs = {}
        for application_id, final_state in (
            (crashed, Crashed(message="no heartbeat")),
            (decided, Suspended(timeout_seconds=3600)),
            (waiting, Suspended(timeout_seconds=3600)),
        ):
            run = start_clearance(application_id, deployment_id=deployment_id, client=client)
            client.set_flow_run_state(run.id, Running(), force=True)
            client.set_flow_run_state(run.id, final_state, force=True)
            runs[application_id] = run.id
        done = [d for d in reconcile_clearance_runs(client, scope="all") if d["application_id"] in runs]
        assert sorted((d["application_id"], d["action"]) for d in done) == sorted([(crashed, "rerun"), (decided, "close")])
        assert client.read_flow_run(runs[crashed]).state.name == "AwaitingRetry"
        assert client.read_flow_run(runs[decided]).state.is_cancelled()
        assert client.read_flow_run(runs[waiting]).state.name == "Suspended"
        assert [d for d in reconcile_clearance_runs(client, scope="all") if d["application_id"] in runs] == []  # said once
    assert len(events(crashed, "clearance_run_reconciled")) == 1 and len(events(decided, "clearance_run_reconciled")) == 1
    listed = {(r["application_id"], r["action"]) for r in operations_summary()["reconciled_runs"]}
    assert listed == {(crashed, "rerun"), (decided, "close")}


def test_a_rerun_that_crashes_before_it_starts_is_run_again_then_left_for_a_person(settings, company_signer):
    """A run the reconciler let go (AwaitingRetry) that crashes again before a worker starts it (its submission failed:
    the several-hosts test met it with a host gone) keeps its run count. It is run again all the same, each re-run
    counting as an attempt, and after the last one it is left for a person, not re-run for ever nor forgotten."""
    from datetime import timedelta

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    from customs.core.settings import configure
    from customs.orchestration.deployments import read_deployments, register_deployments
    from flows.clearance import start_clearance
    from tasks.reconcile import reconcile_clearance_runs

    configure(settings.model_copy(update={"reconcile_after": timedelta(0), "reconcile_max_attempts": 3}))
    (deployment_id, _) = register_deployments([s for s in read_deployments() if s.name == "clearance"])["clearance"]
    application_id = submit(company_signer, unique(sample()))
    with get_client(sync_client=True) as client:
        run = start_clearance(application_id, deployment_id=deployment_id, client=client)
        client.set_flow_run_state(run.id, Running(), force=True)
        actions = []
        for _ in range(3):
            client.set_flow_run_state(run.id, Crashed(message="could not be submitted to its worker"), force=True)
            assert client.read_flow_run(run.id).run_count == 1  # it never ran again
            actions += [
                d["action"] for d in reconcile_clearance_runs(client, scope="all") if d["application_id"] == application_id
            ]
        assert actions == ["rerun", "rerun", "report"]
        assert client.read_flow_run(run.id).state.is_crashed()  # left for a person (customs rerun)
        assert [d for d in reconcile_clearance_runs(client, scope="all") if d["application_id"] == application_id] == []


def test_a_database_failure_the_reconciler_heals_is_never_told_to_the_declarant(settings, company_signer, monkeypatch):
    """Issue 18: a step that fails on the database beyond its retries is reported to support at once, but the
    declarant's notice is held; the reconciler's re-run gets through, and the declarant is never told."""
    from datetime import timedelta

    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import AwaitingRetry
    from sqlalchemy.exc import InterfaceError

    import customs.services.steps as release_step
    from customs.core.clock import utcnow
    from customs.services.outbox import dispatch_due_sync
    from models.outbox import NoticeKind, NoticeStatus

    def away(*args, **kwargs):  # not retried by the task (the connection was not invalidated): the run fails
        raise InterfaceError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    application_id = submit(company_signer, unique(sample()))
    monkeypatch.setattr(release_step, "decide_release", away)
    with pytest.raises(InterfaceError):
        clearance(application_id)
    monkeypatch.undo()
    outbox = settings.data_dir / "outbox"
    assert list(outbox.glob(f"*-support_report-{application_id}.eml"))  # support hears of it at once
    (held,) = notices(application_id, NoticeKind.FAILURE_REPORTED)
    assert held.status == NoticeStatus.PENDING and held.facts["status_at_failure"] == "lane_assigned"
    assert held.next_attempt_at - held.created_at == settings.failure_notice_grace
    assert dispatch_due_sync().claimed == 0  # held
    assert not list(outbox.glob(f"*-failure_reported-{application_id}.eml"))

    (failed,) = flow_runs_of(application_id)  # the reconciler's re-run (as tasks/reconcile.py makes it)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(failed.id, AwaitingRetry(message="re-run by the reconciler"), force=True)
        again = client.read_flow_run(failed.id)
    assert run_flow(clearance, flow_run=again, parameters=again.parameters, return_type="result")["status"] == "released"
    (withdrawn,) = notices(application_id, NoticeKind.FAILURE_REPORTED)
    assert withdrawn.status == NoticeStatus.WITHDRAWN and "got through its steps again" in withdrawn.last_error
    dispatch_due_sync(now=utcnow() + settings.failure_notice_grace + timedelta(minutes=1))
    assert not list(outbox.glob(f"*-failure_reported-{application_id}.eml"))  # never told
    assert len(notices(application_id, NoticeKind.RELEASE)) == 1


def test_a_failure_no_automatic_recovery_will_heal_is_told_at_once(settings, company_signer, monkeypatch):
    """A failure that is not the database's (the reconciler does not re-run it) is told to the declarant at once."""
    import customs.services.steps as release_step
    from models.outbox import NoticeKind, NoticeStatus

    def broken(*args, **kwargs):
        raise RuntimeError("release service unavailable")

    application_id = submit(company_signer, unique(sample()))
    monkeypatch.setattr(release_step, "decide_release", broken)
    with pytest.raises(RuntimeError):
        clearance(application_id)
    (told,) = notices(application_id, NoticeKind.FAILURE_REPORTED)
    assert told.status == NoticeStatus.SENT and "held_until" not in told.facts
