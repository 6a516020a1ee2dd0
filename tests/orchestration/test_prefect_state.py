"""When the Prefect server loses the project's state (issue 26, "Recovery II"), against the session's real Prefect
server: the parts deleted through Prefect's API come back by themselves (the job gate, a host's check, several
hosts at once), declarations whose runs are gone get new ones, readiness names what is missing or failing, and a
resumed zombie attempt writes no state over a run another attempt ended."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
import uuid
from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client

from customs.core.clock import utcnow
from customs.core.settings import configure
from customs.orchestration.automations import CLEARANCE_FAILED, apply_automations
from customs.orchestration.deployments import apply_project
from customs.services.ops_alerts import recent_alerts
from tests.helpers import flow_runs_of, free_port, fresh_deployments, sample, submit_signed, unique, wait_until

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def project(settings):
    """The project on the harness, attached to a work pool of this test's own (its runs reach no other test's
    worker): what `customs serve` puts there."""
    own = settings.model_copy(update={"worker_pool": f"state-{uuid.uuid4().hex[:8]}"})
    configure(own)
    applied = apply_project(own)
    yield own, applied
    from customs.orchestration import upkeep

    upkeep._rebuilt.clear()  # a rebuild of this test's project is not followed up in later tests
    with get_client(sync_client=True) as client:  # the runs this test made wait on its pool: not left for later tests
        for run in client.read_flow_runs(work_pool_filter=_pool_filter(own.worker_pool)):
            client.delete_flow_run(run.id)


def _pool_filter(name: str):
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    return WorkPoolFilter(name=WorkPoolFilterName(any_=[name]))


def _waiting_declaration(signer) -> str:
    """A declaration accepted a minute ago whose clearance run is nowhere (its start lost with the server's state)."""
    return submit_signed(signer, unique(sample()), now=utcnow() - timedelta(minutes=1)).application_id


def _lose(client, deployment: str, automation: str) -> None:
    """What a lost Prefect database looks like to the project, one part at a time: deleted through Prefect's API."""
    client.delete_deployment(client.read_deployment_by_name(f"{deployment}/{deployment}").id)
    for found in client.read_automations_by_name(automation):
        client.delete_automation(found.id)


def test_the_job_gate_finding_its_deployment_gone_rebuilds_the_project_and_starts_the_waiting_declaration(
    project, company_signer
):
    from customs.orchestration.gate import gate_pass
    from customs.orchestration.upkeep import keep_project, missing_parts

    settings, applied = project
    application_id = _waiting_declaration(company_signer)  # its acceptance notice waits for outbox-dispatch
    quiet = utcnow() + timedelta(minutes=1)
    if quiet.minute % 15 == 0:
        quiet += timedelta(minutes=1)
    with get_client(sync_client=True) as client:
        _lose(client, "outbox-dispatch", CLEARANCE_FAILED)
        assert missing_parts(client, settings) == ["deployment outbox-dispatch", f"automation {CLEARANCE_FAILED!r}"]
        lines = gate_pass(client, settings, now=quiet, keeps_project=True)
        assert lines[0].startswith("rebuilt: re-created on the Prefect server: deployment outbox-dispatch")
        assert lines[-1].startswith("outbox-dispatch: work to do")  # the run it came for, created after all
        assert missing_parts(client, settings) == []
        assert len(client.read_automations_by_name(CLEARANCE_FAILED)) == 1
        deployment = client.read_deployment_by_name("outbox-dispatch/outbox-dispatch")
        assert deployment.work_pool_name == settings.worker_pool
    (run,) = flow_runs_of(application_id)  # the declaration's clearance, started again
    assert run.deployment_id == applied.deployments["clearance"][0] and run.state.is_scheduled()
    (alert,) = [a for a in recent_alerts() if a["kind"] == "prefect_state_missing"]
    assert alert["details"]["missing"] == ["deployment outbox-dispatch", f"automation {CLEARANCE_FAILED!r}"]
    assert "job gate" in alert["details"]["noticed_by"]
    assert keep_project(settings, noticed_by="a test") == []  # all there: nothing done, no second run
    assert len(flow_runs_of(application_id)) == 1


def test_a_hosts_check_rebuilds_and_several_hosts_at_once_make_one_of_each(project, company_signer):
    from customs.orchestration.pool import read_pool
    from customs.orchestration.upkeep import ProjectKeeper, restore_clearances

    settings, applied = project
    application_id = _waiting_declaration(company_signer)
    with get_client(sync_client=True) as client:
        _lose(client, "batch-recheck", CLEARANCE_FAILED)
        pool = client.read_work_pool(read_pool(name=settings.worker_pool).name)
    keeper = ProjectKeeper(settings)
    done = keeper.check()  # what each host's keeper does every CUSTOMS_PROJECT_CHECK_SECONDS
    assert done[0] == f"re-created on the Prefect server: deployment batch-recheck, automation {CLEARANCE_FAILED!r}"
    assert keeper.answering and keeper.rebuilds == 1
    with get_client(sync_client=True) as client:
        schedules = client.read_deployment_by_name("batch-recheck/batch-recheck").schedules
        assert schedules  # the deployment came back with its schedule
        for found in client.read_automations_by_name(CLEARANCE_FAILED):
            client.delete_automation(found.id)
    deployment_id = applied.deployments["clearance"][0]

    def host() -> None:  # four hosts finding the same loss at the same moment
        apply_automations(pool, settings)
        with get_client(sync_client=True) as client:
            restore_clearances(client, deployment_id)

    hosts = [threading.Thread(target=host) for _ in range(4)]
    for thread in hosts:
        thread.start()
    for thread in hosts:
        thread.join(60)
    with get_client(sync_client=True) as client:
        assert len(client.read_automations_by_name(CLEARANCE_FAILED)) == 1
    assert len(flow_runs_of(application_id)) == 1  # one run between them


def test_the_clearance_starter_meeting_its_deployment_gone_rebuilds_and_starts_instead_of_giving_up(project, company_signer):
    from customs.orchestration.starting import ClearanceStarter
    from customs.orchestration.upkeep import keep_project

    settings, applied = project
    lost = applied.deployments["clearance"][0]
    with get_client(sync_client=True) as client:
        client.delete_deployment(lost)
    application_id = submit_signed(company_signer, unique(sample())).application_id  # intake queues its start now
    starter = ClearanceStarter(lost, on_missing_deployment=lambda: keep_project(settings, noticed_by="the starter"))
    try:
        starter(application_id)
        (run,) = wait_until(lambda: flow_runs_of(application_id), "the clearance to be started", 60)
    finally:
        starter.stop()
    assert starter.given_up == [] and starter.deployment_id != lost and run.deployment_id == starter.deployment_id
    (alert,) = [a for a in recent_alerts() if a["kind"] == "prefect_state_missing"]
    assert alert["details"]["missing"] == ["deployment clearance"]


def test_a_rebuild_that_fails_while_prefect_recovers_leaves_the_start_waiting_not_given_up(project, company_signer):
    """Seen in the full suite under load: the server answered 503 to one call of the rebuild, and the starter gave
    the start up ("batch-recheck will restart it"). A rebuild that fails is now waited out like an outage."""
    from prefect.exceptions import PrefectHTTPStatusError

    from customs.orchestration.starting import ClearanceStarter
    from customs.orchestration.upkeep import keep_project

    settings, applied = project
    lost = applied.deployments["clearance"][0]
    with get_client(sync_client=True) as client:
        client.delete_deployment(lost)
    calls = []

    def rebuild():
        calls.append(utcnow())
        if len(calls) == 1:
            raise PrefectHTTPStatusError("Server error '503 Service Unavailable'", request=None, response=None)
        keep_project(settings, noticed_by="the starter")

    application_id = submit_signed(company_signer, unique(sample())).application_id
    starter = ClearanceStarter(lost, delays=(0.2, 0.5), on_missing_deployment=rebuild)
    try:
        starter(application_id)
        (run,) = wait_until(lambda: flow_runs_of(application_id), "the clearance to be started", 60)
    finally:
        starter.stop()
    # The first rebuild failed; the start waited and tried again (more than once if the loaded server answered 503
    # again, as the test server can), never giving up; the run is on the re-created deployment.
    assert len(calls) >= 2 and starter.given_up == [] and run.deployment_id == starter.deployment_id != lost


class _Answers500(http.server.BaseHTTPRequestHandler):
    def _fail(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _fail

    def log_message(self, *args) -> None:
        pass


def test_readiness_names_a_missing_deployment_a_prefect_answering_500_and_its_redis_away(project):
    from fastapi.testclient import TestClient

    from customs.api import create_app
    from customs.orchestration.server import configured_api_url
    from customs.orchestration.upkeep import PrefectReadiness, keep_project

    settings, _ = project
    api_url = configured_api_url(settings)

    def probe(url: str = api_url, **changes) -> dict:
        return asyncio.run(PrefectReadiness(url, settings.model_copy(update=changes))())

    assert probe()["state"] == "up"
    with get_client(sync_client=True) as client:
        client.delete_deployment(client.read_deployment_by_name("clearance/clearance").id)
    app = create_app()
    app.state.dependencies["prefect"] = PrefectReadiness(api_url, settings)
    with TestClient(app) as api:
        readiness = api.get("/v1/health/ready").json()
    assert readiness["status"] == "degraded"
    assert readiness["dependencies"]["prefect"]["state"] == "degraded"
    assert readiness["dependencies"]["prefect"]["missing"] == ["deployment clearance"]
    keep_project(settings, noticed_by="a test")
    assert probe()["state"] == "up"

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers500)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        failing = probe(f"http://127.0.0.1:{server.server_address[1]}/api")
    finally:
        server.shutdown()
    assert failing["state"] == "degraded" and "GET /api/health 500" in failing["detail"]

    away = probe(prefect_ha=True, redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert away["state"] == "degraded" and "Redis of the high-availability Prefect server" in away["detail"]
    assert probe(f"http://127.0.0.1:{free_port()}/api")["state"] == "down"


def test_a_resumed_zombie_attempt_writes_no_state_over_the_run_another_attempt_ended(settings, company_signer, monkeypatch):
    """The race on purpose: attempt 1 is held just before its end (its worker stopped), the run is marked Crashed
    and re-run, attempt 2 ends it; then attempt 1 resumes. It must end without a state of its own."""
    from prefect.exceptions import Abort
    from prefect.flow_engine import run_flow
    from prefect.states import AwaitingRetry, Crashed, Pending

    import flows.clearance as module
    from flows.clearance import clearance, start_clearance

    application_id = submit_signed(company_signer, unique(sample())).application_id
    held, resume = threading.Event(), threading.Event()
    read_story = module._read_story

    def stopped_before_its_end(application_id: str):
        if threading.current_thread().name == "attempt-1":
            held.set()
            assert resume.wait(120)
        return read_story(application_id)

    monkeypatch.setattr(module, "_read_story", stopped_before_its_end)
    _, deployments = fresh_deployments()  # a pool no worker serves: the test plays both workers
    with get_client(sync_client=True) as client:
        run = start_clearance(application_id, deployment_id=deployments["clearance"], client=client)
        outcome: dict = {}

        def attempt_1() -> None:
            try:
                outcome["state"] = run_flow(clearance, flow_run=client.read_flow_run(run.id), return_type="state")
            except Abort as aborted:
                outcome["aborted"] = str(aborted)

        client.set_flow_run_state(run.id, Pending())  # claimed by the first worker
        first = threading.Thread(target=attempt_1, name="attempt-1")
        first.start()
        try:
            assert held.wait(120)  # attempt 1 did every step and stops just before proposing its end
            client.set_flow_run_state(run.id, Crashed(message="no heartbeat: its worker stopped"), force=True)
            assert client.set_flow_run_state(run.id, AwaitingRetry(message="re-run by the reconciler")).state.is_scheduled()
            client.set_flow_run_state(run.id, Pending())  # claimed by another worker
            second = run_flow(clearance, flow_run=client.read_flow_run(run.id), return_type="state")
            assert second.is_completed()
        finally:
            resume.set()  # the stopped worker resumes
            first.join(120)
        states = client.read_flow_run_states(run.id)
        final = client.read_flow_run(run.id).state
    assert [s.name for s in states if s.is_completed()] == [second.name]  # one end, attempt 2's
    assert "moved on without this attempt" in outcome.get("aborted", "")
    assert final.id == states[-1].id and final.name == second.name


def test_a_declaration_a_restore_put_back_is_cleared_again_with_its_announced_number(settings, company_signer):
    """The chaos suite's restore scenario (issue 26): after a restore, declarations the backup held at an earlier
    step stayed there: their start used intake's idempotency key, which found the run that had cleared them before
    the restore, and started nothing. `customs serve` now restarts the restore check's "behind" declarations under
    a key of the restore; they are cleared again and keep the number their declarants were told."""
    from customs.orchestration.starting import ClearanceStarter
    from customs.services.backup import create_backup, restore_backup
    from customs.services.queries import declaration_status
    from tests.helpers import clearance_worker, stored

    with clearance_worker(limit=2) as (worker, deployments):
        start = ClearanceStarter(deployments["clearance"])
        application_id = submit_signed(company_signer, unique(sample())).application_id
        backup = create_backup()
        start(application_id)
        wait_until(lambda: declaration_status(application_id)["status"] == "released", "the release", 60)
        number = stored(application_id).registration_number
        done = restore_backup(backup.folder)
        assert [d["application_id"] for d in done["check"]["behind"]] == [application_id]
        assert stored(application_id).status == "submitted"
        start(application_id)  # intake's key: the run of before the restore is found, nothing starts
        wait_until(lambda: start.waiting == 0, "the start to be made", 30)
        assert len(flow_runs_of(application_id)) == 1 and stored(application_id).status == "submitted"
        start.restart([application_id], "restore:test")
        wait_until(lambda: declaration_status(application_id)["status"] == "released", "the release after the restore", 60)
        start.stop()
    assert len(flow_runs_of(application_id)) == 2
    assert stored(application_id).registration_number == number


def test_declarations_cleared_by_runs_the_lost_server_forgot_get_a_run_in_its_history(project, company_signer):
    """The chaos suite's prefect-db-lost: runs in flight at the loss end their steps against a server that no longer
    knows them (404), so their declarations end cleared with no run in Prefect's history. The rebuild, and each
    check for a few minutes after it, give every declaration of the last half hour without a run one of its own;
    a declaration with a run gets none."""
    from customs.orchestration import upkeep
    from customs.orchestration.upkeep import ProjectKeeper
    from tests.helpers import run_steps

    settings, applied = project
    forgotten = submit_signed(company_signer, unique(sample())).application_id
    run_steps(forgotten)  # cleared, as by a run the server forgot
    with get_client(sync_client=True) as client:
        _lose(client, "batch-recheck", CLEARANCE_FAILED)
    time.sleep(5.5)  # a declaration accepted in the last 5 s is left to intake's own start
    try:
        keeper = ProjectKeeper(settings)
        done = keeper.check()
        assert any(forgotten in line for line in done)
        (run,) = flow_runs_of(forgotten)
        later = submit_signed(company_signer, unique(sample())).application_id
        run_steps(later)  # an in-flight run that ended after the rebuild
        time.sleep(5.5)
        assert any(later in line for line in keeper.check())  # the follow-up check within 5 minutes of the rebuild
        assert len(flow_runs_of(later)) == 1 and len(flow_runs_of(forgotten)) == 1  # no second run for the first
    finally:
        upkeep._rebuilt.clear()  # no other test follows this one's rebuild up
