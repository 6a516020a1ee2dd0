"""The automations that reach a person, against a real Prefect server (the session's harness): a failed or crashed
clearance run, a deadline breached, a print request overdue each fire their automation, whose webhook calls the
intake API served here on a free port, which records the alert and queues the e-mails (once per occurrence)."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest
import uvicorn

from customs.core.clock import utcnow
from customs.core.settings import configure
from customs.services.ops_alerts import ops_alert_token, recent_alerts
from customs.services.printing import request_print
from models.outbox import NoticeKind, NoticeStatus
from tests.helpers import cleared, free_port, notices, run_steps, sample, stored, submit_signed, unique, wait_until

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def alerting(settings):
    """The intake API on a free port, and the service's automations on the harness pointing at it."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    from customs.api.app import create_app
    from customs.orchestration.automations import CLEARANCE_FAILED, DEADLINE_BREACHED, PRINT_OVERDUE, apply_automations
    from customs.orchestration.pool import ensure_pool, read_pool

    served = settings.model_copy(update={"api_port": free_port()})
    configure(served)
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=served.api_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the intake API to listen", 30)
    with get_client(sync_client=True) as client:
        pool, _ = ensure_pool(client, read_pool(name=served.worker_pool))
    apply_automations(pool, served)  # created, or updated to this test's API port
    assert apply_automations(pool, served) == []  # idempotent: nothing differs the second time
    names = {a.name: a for a in (Automation.read(name=n) for n in (CLEARANCE_FAILED, DEADLINE_BREACHED, PRINT_OVERDUE))}
    assert all(a.description and a.enabled for a in names.values())
    try:
        yield served
    finally:
        server.should_exit = True
        thread.join(10)


def alert_for(key: str, timeout: float = 60.0) -> dict:
    found: dict = {}

    def arrived() -> bool:
        for alert in recent_alerts(limit=50):
            if alert["alert"] == key:
                found.update(alert)
                return True
        return False

    wait_until(arrived, f"the alert {key}", timeout)
    return found


def failure_alert(application_id: str) -> str:
    """The key of the alert of the declaration's failure where it stands (one per declaration and failure)."""
    declaration = stored(application_id)
    return f"clearance_failure:{application_id}:{declaration.status}:{declaration.updated_at:%Y%m%dT%H%M%S%f}"


def test_a_failed_clearance_run_reaches_support_and_the_ops_mailbox_once(alerting, company_signer, monkeypatch):
    import customs.services.steps as steps
    from flows.clearance import clearance

    def broken(*args, **kwargs):
        raise RuntimeError("risk profile service unavailable")

    application_id = submit_signed(company_signer, unique(sample())).application_id
    monkeypatch.setattr(steps, "assess_risk", broken)
    with pytest.raises(RuntimeError):
        clearance(application_id)
    monkeypatch.undo()
    from tests.helpers import flow_runs_of

    (run,) = flow_runs_of(application_id)
    alert = alert_for(failure_alert(application_id))
    assert alert["application_id"] == application_id and alert["kind"] == "clearance_run_failed"
    assert alert["recipients"] == [alerting.support_address, alerting.ops_address]
    assert alert["details"]["reported_by"] == "the run"  # the run reported its failed step: no second report
    reports = notices(application_id, NoticeKind.SUPPORT_REPORT)
    assert sorted(n.recipient for n in reports) == sorted([alerting.support_address, alerting.ops_address])
    assert len({n.facts["report_id"] for n in reports}) == 1  # the ops mailbox gets a copy of the same report


def test_a_crashed_clearance_run_is_reported_by_the_automation(alerting, company_signer):
    """A run whose worker died never reaches its own failure handling: the automation makes the report."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    from flows.clearance import clearance

    application_id = submit_signed(company_signer, unique(sample())).application_id
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(clearance, name=application_id, tags=["clearance", f"application:{application_id}"])
        client.set_flow_run_state(run.id, Running(), force=True)
        client.set_flow_run_state(run.id, Crashed(message="worker process exited with SIGKILL"), force=True)
    alert = alert_for(failure_alert(application_id))
    assert alert["details"]["reported_by"] == "the automation" and alert["details"]["state"] == "Crashed"
    reports = notices(application_id, NoticeKind.SUPPORT_REPORT)
    assert sorted(n.recipient for n in reports) == sorted([alerting.support_address, alerting.ops_address])
    assert "SIGKILL" in reports[0].facts["error_description"]
    # the reconciler runs a crashed run again: the declarant's notice waits for that chance (told only if it fails too)
    (held,) = notices(application_id, NoticeKind.FAILURE_REPORTED)
    assert held.status == NoticeStatus.PENDING and "held_until" in held.facts
    assert held.next_attempt_at - held.created_at == alerting.failure_notice_grace


def test_a_replayed_failure_alert_with_other_run_counts_reaches_nobody(alerting, company_signer):
    """Issue 25, item 5: the same Failed event posted again with run counts 2, 3 (and new event ids) made a new
    support report and failure letter each time. One alert per declaration and failure, whatever the run count."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    from flows.clearance import clearance

    application_id = submit_signed(company_signer, unique(sample())).application_id
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(clearance, name=application_id, tags=["clearance", f"application:{application_id}"])
        client.set_flow_run_state(run.id, Running(), force=True)
        client.set_flow_run_state(run.id, Crashed(message="worker process exited with SIGKILL"), force=True)
    (first,) = wait_until(lambda: [a for a in recent_alerts() if a["application_id"] == application_id], "the alert", 60)
    letters = notices(application_id)
    assert sorted(n.kind for n in letters if n.kind != NoticeKind.ACCEPTANCE) == [
        NoticeKind.FAILURE_REPORTED,
        NoticeKind.SUPPORT_REPORT,
        NoticeKind.SUPPORT_REPORT,
    ]
    url, token = alerting.ops_alert_endpoint, ops_alert_token(alerting)
    for run_count in (2, 3):
        event = {
            "id": f"00000000-0000-0000-0000-00000000000{run_count}",
            "event": "prefect.flow-run.Failed",
            "occurred": utcnow().isoformat(),
            "resource": {
                "prefect.resource.id": f"prefect.flow-run.{run.id}",
                "prefect.resource.name": application_id,
                "prefect.run-count": str(run_count),
                "prefect.state-name": "Failed",
                "prefect.state-message": "replayed",
            },
            "related": [{"prefect.resource.id": f"prefect.tag.application:{application_id}", "prefect.resource.role": "tag"}],
        }
        replay = httpx.post(url, json={"automation": "replayed", "event": event}, headers={"Authorization": f"Bearer {token}"})
        assert replay.status_code == 200 and replay.json()["created"] is False, replay.json()
        assert replay.json()["alert"] == first["alert"]
    assert [n.id for n in notices(application_id)] == [n.id for n in letters]  # nobody reached again


def test_a_crash_no_automation_heard_of_is_alerted_by_the_reconciler_once(settings, company_signer):
    """A crash during a Redis outage of the high-availability server: Prefect's events, and so the automation, never
    came. The reconciler's sighting makes the same single alert; the automation's late call for it reaches nobody."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    from customs.services.ops_alerts import receive_alert
    from flows.clearance import clearance
    from tasks.reconcile import reconcile_clearance_runs

    application_id = submit_signed(company_signer, unique(sample())).application_id
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(
            clearance,
            parameters={"application_id": application_id},
            name=application_id,
            tags=["clearance", f"application:{application_id}"],
        )
        client.set_flow_run_state(run.id, Running(), force=True)
        client.set_flow_run_state(run.id, Crashed(message="worker process exited with SIGKILL"), force=True)
        done = [d for d in reconcile_clearance_runs(client, scope="orphans") if d["application_id"] == application_id]
    assert [d["action"].removesuffix("_failed") for d in done] == ["rerun"]
    (alert,) = [a for a in recent_alerts() if a["application_id"] == application_id]
    assert alert["details"]["reported_by"] == "the workers' reconciler" and alert["details"]["state"] == "Crashed"
    reports = notices(application_id, NoticeKind.SUPPORT_REPORT)
    assert sorted(n.recipient for n in reports) == sorted([settings.support_address, settings.ops_address])
    late = {
        "id": "00000000-0000-0000-0000-0000000000aa",
        "event": "prefect.flow-run.Crashed",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.name": application_id},
    }
    assert receive_alert({"automation": "late", "event": late}, settings=settings)["created"] is False
    assert len(notices(application_id, NoticeKind.SUPPORT_REPORT)) == 2


def test_a_release_deadline_breach_reaches_the_zones_supervisors_once(alerting, company_signer):
    from prefect import flow

    from tasks.officials import release_deadlines  # deadline-watch's task

    document = unique(sample("03-unpaid-vat.json"))
    application_id = submit_signed(company_signer, document).application_id
    run_steps(application_id)
    declaration = stored(application_id)

    @flow(name="deadline-pass")
    def one_pass():
        return release_deadlines(now=declaration.release_due_at + timedelta(seconds=1))

    assert one_pass()["breached"] == [application_id]
    alert = alert_for(f"release_deadline_breached:{application_id}")
    assert alert["recipients"] == ["a.nurlanov@kgd.gov.kz"]  # the supervisor of the declaration's zone
    assert alert["details"]["queued_now"] == []  # the breach's own transaction queued it: the single source
    breach = [n for n in notices(application_id, NoticeKind.RELEASE_DEADLINE_ALERT) if n.facts["stage"] == "breach"]
    assert [n.recipient for n in breach] == ["a.nurlanov@kgd.gov.kz"]  # one e-mail, not two
    from customs.orchestration.operations import operations_view

    shown = [a for a in operations_view()["alerts"] if a["alert"] == f"release_deadline_breached:{application_id}"]
    assert shown and shown[0]["recipients"] == ["a.nurlanov@kgd.gov.kz"]  # `customs ops` lists it


def test_an_overdue_print_request_reaches_the_offices_supervisors_and_a_repeated_call_reaches_nobody(alerting, company_signer):
    from prefect import flow

    from flows.print_deadlines import deadline_pass

    declaration = cleared(company_signer)
    now = utcnow()
    request = request_print(declaration.application_id, now=now)

    @flow(name="print-deadlines-replayed")
    def one_pass():  # the deployment's flow uses the real clock; the test replays minute 31
        return deadline_pass(now + timedelta(minutes=31))

    assert one_pass()["breached"] == [request.request_id]
    alert = alert_for(f"print_overdue:{request.request_id}")
    assert alert["recipients"] and alert["details"]["queued_now"] == []
    breach = [n for n in notices(declaration.application_id, NoticeKind.PRINT_DEADLINE_ALERT) if n.facts["stage"] == "breach"]
    assert sorted(n.recipient for n in breach) == sorted(alert["recipients"])

    # The same occurrence again (Prefect firing twice, a call repeated): recorded once, nobody reached again.
    url, token = alerting.ops_alert_endpoint, ops_alert_token(alerting)
    event = {
        "id": "00000000-0000-0000-0000-000000000001",
        "event": "customs.print-request.overdue",
        "resource": {"prefect.resource.id": f"customs.print-request.{request.request_id}"},
    }
    again = httpx.post(url, json={"automation": "by hand", "event": event}, headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 200 and again.json()["created"] is False
    assert len(
        [n for n in notices(declaration.application_id, NoticeKind.PRINT_DEADLINE_ALERT) if n.facts["stage"] == "breach"]
    ) == len(breach)
    # Only the operations alert token is accepted; nothing else is routed.
    assert httpx.post(url, json={"event": event}).status_code == 401
    assert httpx.post(url, json={"event": event}, headers={"Authorization": "Bearer not-it"}).status_code == 401
    unknown = httpx.post(url, json={"event": {**event, "event": "x.y"}}, headers={"Authorization": f"Bearer {token}"})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "ALERT_UNKNOWN"


def test_the_job_gate_creates_a_minute_jobs_run_only_when_it_has_something_to_do(settings, company_signer):
    from prefect.client.orchestration import get_client

    from customs.orchestration.deployments import read_deployments, register_deployments
    from customs.orchestration.gate import gate_pass
    from customs.services.audit_anchors import ensure_anchor_key, verify_audit_anchors

    gated = [s for s in read_deployments() if s.name in ("deadline-watch", "outbox-dispatch", "print-deadlines")]
    assert all(not spec.schedules for spec in gated)  # not scheduled every minute any more
    register_deployments(gated)
    quiet = utcnow() + timedelta(minutes=1)
    if quiet.minute % 15 == 0:  # the first minute of a quarter of an hour has the periodic duties
        quiet += timedelta(minutes=1)
    with get_client(sync_client=True) as client:
        for spec in gated:
            assert not client.read_deployment_by_name(f"{spec.name}/{spec.name}").schedules
        ensure_anchor_key(settings)  # this host anchors (customs serve makes the key)
        assert gate_pass(client, settings, now=quiet) == []  # nothing to do: no run
        assert verify_audit_anchors(settings).anchors == 0  # and no events: no anchor
        submit_signed(company_signer, unique(sample()))  # queues the acceptance notice
        (line,) = gate_pass(client, settings, now=quiet)
        assert line.startswith("outbox-dispatch: work to do")
        anchored = verify_audit_anchors(settings)  # the new event anchored in the same pass (issue 25, item 4)
        assert anchored.intact and anchored.anchors == 1 and anchored.unanchored == 0
        assert gate_pass(client, settings, now=quiet) == [line]  # another worker at the same minute: the same run
        slot = quiet.replace(minute=quiet.minute - quiet.minute % 15, second=20) + timedelta(minutes=15)
        assert sorted(line.split(":")[0] for line in gate_pass(client, settings, now=slot)) == [
            "deadline-watch",
            "outbox-dispatch",
            "print-deadlines",
        ]
