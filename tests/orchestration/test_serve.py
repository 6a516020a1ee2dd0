"""Running it for real: `customs serve` as a process on free ports, prefect.yaml deployed to a Prefect
server, and intake while Prefect is down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    INSPECTOR,
    ROOT,
    TcpGate,
    as_bytes,
    clearance_worker,
    events,
    free_port,
    sample,
    signed_act_over_http,
    submit_signed,
    unique,
    wait_until,
)

CUSTOMS = str(Path(sys.executable).with_name("customs"))


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def served(tmp_path, pki):
    """`customs serve` in its own process: its own data directory, Prefect server and ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "CUSTOMS_"))}
    env.update(
        CUSTOMS_DATA_DIR=str(tmp_path / "data"),
        CUSTOMS_PREFECT_PORT=str(free_port()),
        CUSTOMS_API_PORT=str(free_port()),
        CUSTOMS_TRUST_DIR=str(pki.trust_dir),
        CUSTOMS_CRL_DIR=str(pki.crl_dir),
        CUSTOMS_WORKER_POLL_SECONDS="0.3",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen([CUSTOMS, "serve"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{env['CUSTOMS_API_PORT']}"
    try:
        wait_until(lambda: _healthy(f"{api}/v1/health") or process.poll() is not None, "customs serve to answer", 240)
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        yield {
            "process": process,
            "env": env,
            "api": api,
            "prefect": f"http://127.0.0.1:{env['CUSTOMS_PREFECT_PORT']}/api",
            "log": tmp_path / "serve.log",
        }
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run([CUSTOMS, "server", "stop"], env=env, cwd=ROOT, capture_output=True, timeout=120)
        log.close()


def declarant_client(env: dict, name: str) -> dict[str, str]:
    """A declarant API client of the served process (`customs clients add`), as request headers."""
    added = subprocess.run(
        [CUSTOMS, "clients", "add", name, "--kind", "declarant", "--id", "050840001233"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    token = next(line.split()[-1] for line in added.stdout.splitlines() if line.startswith("token:"))
    return {"Authorization": f"Bearer {token}"}


def test_customs_serve_clears_a_declaration_submitted_through_the_api(served, company_signer):
    env, api = served["env"], served["api"]
    content = as_bytes(unique(sample()))
    headers = declarant_client(env, "alatau")
    response = httpx.post(
        f"{api}/v1/declarations",
        headers=headers,
        timeout=30,
        files={"declaration": ("declaration.json", content), "signature": ("declaration.json.p7s", company_signer.sign(content))},
    )
    assert response.status_code == 202, response.text
    status_url = api + response.json()["status_url"]

    def released():
        body = httpx.get(status_url, headers=headers, timeout=10).json()
        return body if body["status"] == "released" else None

    body = wait_until(released, "the declaration to be released by the served clearance deployment", 60)
    assert body["registration_number"].startswith("50101/")
    # It ran as a run of the `clearance` deployment, named by its registration number.
    runs = httpx.post(
        f"{served['prefect']}/flow_runs/filter",
        json={"flow_runs": {"tags": {"all_": [f"application:{body['application_id']}"]}}},
        timeout=10,
    ).json()
    assert len(runs) == 1 and runs[0]["deployment_id"] and runs[0]["name"] == body["registration_number"]
    # Prefect knows the worker: the pool is Ready with a worker online, and every deployment is Ready.
    prefect = served["prefect"]
    pool = httpx.get(f"{prefect}/work_pools/customs", timeout=10).json()
    assert (pool["type"], pool["status"]) == ("customs-thread", "READY")
    workers = httpx.post(f"{prefect}/work_pools/customs/workers/filter", json={}, timeout=10).json()
    assert [w["status"] for w in workers] == ["ONLINE"]
    queues = {q["name"]: q for q in httpx.post(f"{prefect}/work_pools/customs/queues/filter", json={}, timeout=10).json()}
    assert (queues["clearance"]["priority"], queues["maintenance"]["concurrency_limit"]) == (1, 4)
    listed = httpx.post(f"{prefect}/deployments/filter", json={}, timeout=10).json()
    wait_until(
        lambda: all(d["status"] == "READY" for d in httpx.post(f"{prefect}/deployments/filter", json={}, timeout=10).json()),
        "every deployment to be Ready",
        30,
    )
    assert {d["name"]: d["work_queue_name"] for d in listed}["clearance"] == "clearance"
    deployments = {d["name"] for d in listed}
    assert deployments == {
        "clearance",
        "batch-recheck",
        "deadline-watch",
        "outbox-dispatch",
        "print-deadlines",
        "print-deadline-timer",
        "paper-copy",
        "crl-refresh",
    }
    # the runs page's saved filters for operations staff
    searches = {
        s["name"]: s["filters"] for s in httpx.post(f"{served['prefect']}/saved_searches/filter", json={}, timeout=10).json()
    }
    assert {"Clearance", "Waiting for an official", "Failed clearance"} <= set(searches)
    assert {"property": "state", "value": ["Failed", "Crashed"]}.items() <= searches["Failed clearance"][1].items()
    # The same bytes again: the same application.
    again = httpx.post(
        f"{api}/v1/declarations",
        headers=headers,
        timeout=30,
        files={"declaration": ("declaration.json", content), "signature": ("declaration.json.p7s", company_signer.sign(content))},
    )
    assert again.status_code == 200 and again.json()["application_id"] == body["application_id"]
    # A paper copy: the request is recorded at once; its copy is rendered by a paper-copy run, and its two deadline
    # timers are scheduled runs of print-deadline-timer.
    asked = httpx.post(f"{status_url}/print-requests", headers=headers, json={}, timeout=30)
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["request_id"]

    def runs_of_request() -> dict[str, str]:
        found = httpx.post(
            f"{served['prefect']}/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": [f"print-request:{request_id}"]}}},
            timeout=10,
        ).json()
        return {r["name"]: r["state"]["type"] for r in found}

    wait_until(lambda: runs_of_request().get(f"copy-{request_id}") == "COMPLETED", "the paper-copy run to complete", 120)
    assert runs_of_request() == {
        f"copy-{request_id}": "COMPLETED",
        f"{request_id}-alert": "SCHEDULED",
        f"{request_id}-breach": "SCHEDULED",
    }
    # A second `customs serve` on the same API port refuses to start, saying why.
    clash = subprocess.run([CUSTOMS, "serve"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert clash.returncode != 0 and "is taken" in (clash.stdout + clash.stderr)
    # Ctrl-C stops it cleanly (also when started from a script in the background, where SIGINT comes ignored).
    served["process"].send_signal(signal.SIGINT)
    assert served["process"].wait(60) == 0, served["log"].read_text()[-5000:]
    assert "stopping" in served["log"].read_text() and "stopped" in served["log"].read_text()


def test_serve_rides_out_its_prefect_server_killed(served, company_signer):
    """Issue 18: kill -9 of the Prefect server that `customs serve` started. Intake answers at once all the same
    (the starts are queued), readiness says Prefect is down, the server is restarted by itself, and every
    declaration accepted meanwhile is cleared without anyone acting."""
    env, api = served["env"], served["api"]
    headers = declarant_client(env, "broker")
    pid_file = Path(env["CUSTOMS_DATA_DIR"]) / "prefect" / "server.pid"
    killed = int(pid_file.read_text())
    os.killpg(killed, signal.SIGKILL)
    wait_until(lambda: not _healthy(f"{served['prefect']}/health"), "the Prefect server to be gone", 30)
    ids = []
    for _ in range(4):
        content = as_bytes(unique(sample()))
        response = httpx.post(  # a 5 s client time-out: intake must not wait on the missing server
            f"{api}/v1/declarations",
            headers=headers,
            timeout=5,
            files={"declaration": ("d.json", content), "signature": ("d.p7s", company_signer.sign(content))},
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["application_id"])
    readiness = wait_until(
        lambda: (r := httpx.get(f"{api}/v1/health/ready", timeout=5).json())["dependencies"]["prefect"]["state"] == "down" and r,
        "readiness to say Prefect is down",
        30,
    )
    assert readiness["status"] == "degraded" and readiness["dependencies"]["database"]["state"] == "up"

    def all_released() -> bool:
        return all(
            httpx.get(f"{api}/v1/declarations/{a}", headers=headers, timeout=5).json()["status"] == "released" for a in ids
        )

    wait_until(all_released, "the declarations accepted meanwhile to be released", 240)
    assert int(pid_file.read_text()) != killed and "restarting it" in served["log"].read_text()
    assert httpx.get(f"{api}/v1/health/ready", timeout=5).json()["dependencies"]["prefect"]["state"] == "up"


def test_intake_while_prefect_is_down_keeps_the_declaration_for_batch_recheck(settings, company_signer):
    """The start of the clearance fails (nothing listens where Prefect should be): 202 all the same, and the
    declaration, committed before the answer, is what batch-recheck restarts later."""
    import uuid
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from customs.api import create_app
    from customs.core.clock import utcnow
    from customs.orchestration.server import prefect_api
    from customs.orchestration.starting import ClearanceStarter
    from customs.services.clients import create_client
    from customs.services.queries import declaration_status
    from tasks.recheck import batch_recheck_run

    _, token = create_client("alatau", "declarant", identifiers=["050840001233"])
    app = create_app()
    starter = ClearanceStarter(uuid.uuid4())
    dead = f"http://127.0.0.1:{free_port()}/api"

    def start(application_id: str) -> None:
        with prefect_api(dead):
            starter(application_id)

    app.state.start_clearance = start
    content = as_bytes(unique(sample()))
    with TestClient(app) as client:
        response = client.post(
            "/v1/declarations",
            headers={"Authorization": f"Bearer {token}"},
            files={"declaration": ("d.json", content), "signature": ("d.p7s", company_signer.sign(content))},
        )
    assert response.status_code == 202, response.text
    application_id = response.json()["application_id"]
    assert declaration_status(application_id)["status"] == "submitted"
    restarted: list[str] = []
    batch_recheck_run(restart=restarted.append, now=utcnow() + timedelta(minutes=11))
    assert restarted == [application_id]
    starter.stop()  # it was retrying the start meanwhile; this test's Prefect server stays dead


@pytest.mark.usefixtures("prefect_harness")
def test_prefect_yaml_is_accepted_by_prefect_deploy(tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMS_")}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), CUSTOMS_PROJECT_DIR=str(ROOT), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    prefect = str(Path(sys.executable).with_name("prefect"))
    pool = subprocess.run(
        [prefect, "work-pool", "create", "customs", "--type", "customs-thread", "--overwrite"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deployed = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert {"clearance", "batch-recheck", "deadline-watch", "outbox-dispatch", "print-deadlines", "crl-refresh"} <= set(
        deployments
    )
    assert deployments["batch-recheck"].schedules[0].schedule.cron == "*/15 * * * *"
    assert deployments["deadline-watch"].work_pool_name == "customs"
    assert all(deployments[name].description for name in ("clearance", "batch-recheck", "crl-refresh"))


@pytest.mark.usefixtures("prefect_harness")
def test_the_clearance_worker_runs_several_clearances_at_once_in_its_own_process(settings, company_signer):
    """Runs claimed together are executed together, in threads of the worker's process (no process per run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    from customs.orchestration.starting import ClearanceStarter
    from customs.services.queries import declaration_status

    with clearance_worker(limit=4) as (worker, deployments), get_client(sync_client=True) as client:
        # The four runs become due together: the pool is paused while they are created (on a slow machine the
        # worker's poll could otherwise fall between two creations and claim them two by two).
        client.update_work_pool(worker._work_pool_name, WorkPoolUpdate(is_paused=True))
        start = ClearanceStarter(deployments["clearance"])
        ids = [submit_signed(company_signer, unique(sample())).application_id for _ in range(4)]
        for application_id in ids:
            start(application_id)

        def created():
            return [r for r in client.read_flow_runs() if r.parameters.get("application_id") in ids]

        wait_until(lambda: len(created()) == 4, "the four runs to be created", 60)
        client.update_work_pool(worker._work_pool_name, WorkPoolUpdate(is_paused=False))
        wait_until(lambda: all(declaration_status(a)["status"] == "released" for a in ids), "four releases", 60)
        wait_until(lambda: worker.executed == 4, "the four attempts to end", 30)
        # This test's runs (the clearance deployment keeps its id across tests, with other tests' runs on it)
        runs = created()
        history = [s.name for s in client.read_flow_run_states(runs[0].id)]
    assert len(runs) == 4 and all(r.state.is_completed() for r in runs)
    assert {r.infrastructure_pid.split(":")[1] for r in runs} == {str(os.getpid())}  # executed in this very process
    assert history == ["Scheduled", "Pending", "Running", "Completed"]  # claimed (Pending) through orchestration
    # Executed at once, not one after another: at some moment several of them were running. (All four at one
    # moment is not guaranteed: a clearance takes a few hundred ms, and the fourth claim can come after the
    # first run has ended; a worker that ran them one by one would never show two at once.)
    edges = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs])
    running = [sum(step for _, step in edges[: i + 1]) for i in range(len(edges))]
    assert max(running) >= 2, [(r.start_time, r.end_time) for r in runs]


def test_a_served_run_suspends_for_the_official_and_resumes_with_the_decision(served, company_signer, officials):
    """Under a deployment the waiting run suspends (its thread is free); the decision through the API resumes it."""
    env, api = served["env"], served["api"]

    def token_for(*args):
        added = subprocess.run([CUSTOMS, "clients", "add", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        return next(line.split()[-1] for line in added.stdout.splitlines() if line.startswith("token:"))

    declarant = {"Authorization": f"Bearer {token_for('alatau', '--kind', 'declarant', '--id', '050840001233')}"}
    official = {"Authorization": f"Bearer {token_for('inspector', '--kind', 'official', '--official', 'KZ-OF-0001')}"}
    content = as_bytes(unique(sample("03-unpaid-vat.json")))
    response = httpx.post(
        f"{api}/v1/declarations",
        headers=declarant,
        timeout=30,
        files={"declaration": ("d.json", content), "signature": ("d.p7s", company_signer.sign(content))},
    )
    assert response.status_code == 202, response.text
    application_id = response.json()["application_id"]

    def runs():
        return httpx.post(
            f"{served['prefect']}/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": [f"application:{application_id}"]}}},
            timeout=10,
        ).json()

    suspended = wait_until(
        lambda: [r for r in runs() if r["state"]["name"] == "Suspended"], "the run to suspend for a decision", 60
    )
    signed = signed_act_over_http(
        lambda path, **kw: httpx.post(f"{api}{path}", timeout=30, **kw),
        official,
        officials.signer("KZ-OF-0001"),
        "decide",
        application_id,
        choice={"decision": "release", "decision_code": "10"},
        text="VAT paid at the post",
    )
    decided = httpx.post(f"{api}/v1/declarations/{application_id}/decision", headers=official, timeout=60, json=signed)
    assert decided.status_code == 200, decided.text
    wait_until(
        lambda: [r for r in runs() if r["id"] == suspended[0]["id"] and r["state"]["type"] == "COMPLETED"],
        "the resumed run to complete",
        60,
    )
    status = httpx.get(f"{api}/v1/declarations/{application_id}", headers=declarant, timeout=10).json()
    assert (status["status"], status["decided_by"]) == ("released", "KZ-OF-0001")
    assert len(runs()) == 1  # the same flow run, resumed: not a second one


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_suspended_from_outside_stops_at_its_next_step():
    """The worker replaces Prefect's per-run suspension observer with one watch per attempt on a shared
    observer: suspending a running run from outside (the UI's Suspend) must still stop it at its next task,
    leaving it suspended, and stopping the worker gives Prefect its own observer back."""
    import prefect.flow_engine as engine
    from prefect.client.orchestration import get_client
    from prefect.states import Suspended

    original = engine.observe_flow_run_suspension
    ticking = ("ticking", "tests/fixtures/suspendable_flow.py:ticking")
    with clearance_worker(ticking, limit=1) as (worker, deployments), get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployments["ticking"], parameters={"seconds": 60})
        wait_until(lambda: client.read_flow_run(run.id).state.is_running(), "the run to start", 60)
        assert engine.observe_flow_run_suspension is not original  # the worker's watch is in place
        wait_until(lambda: len(client.read_task_runs()) >= 2, "a few ticks", 30)
        client.set_flow_run_state(run.id, Suspended(timeout_seconds=300), force=True)
        wait_until(lambda: worker.executed == 1, "the suspended run to stop executing", 20)
        state = client.read_flow_run(run.id).state
        assert state.is_paused() and state.name == "Suspended"
        ticks = len(client.read_task_runs())
        time.sleep(1.0)
        assert len(client.read_task_runs()) == ticks  # it stopped ticking
    assert engine.observe_flow_run_suspension is original


@pytest.mark.usefixtures("prefect_harness")
def test_the_worker_runs_an_async_flow_in_a_loop_of_its_own(settings):
    """outbox-dispatch is an async flow: the worker's run thread has no event loop, so the engine's
    coroutine must be driven by one of the thread's own (it was returned un-awaited and the run crashed)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    dispatch = ("outbox-dispatch", "flows/outbox_dispatch.py:outbox_dispatch")
    with clearance_worker(dispatch, limit=2) as (worker, deployments), get_client(sync_client=True) as client:
        runs = [client.create_flow_run_from_deployment(deployments["outbox-dispatch"]) for _ in range(2)]
        wait_until(lambda: worker.executed == 2, "both dispatch runs to end", 60)
        for run in runs:
            state = client.read_flow_run(run.id).state
            assert state.is_completed(), (state.name, state.message)
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
            assert [a.key for a in artifacts] == ["outbox"]  # the flow's body ran to its end


@pytest.mark.usefixtures("prefect_harness")
def test_starting_the_intake_api_leaves_prefects_events_service_running(settings):
    """uvicorn's default logging set-up shut down every logging handler; flushing Prefect's API log handler
    stopped the process's events service with it, so the worker's events (its start, the runs' heartbeats)
    were refused at random while customs serve started."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from customs.api import create_app
    from customs.cli.serve import intake_server

    emit_event(event="customs.test.before", resource={"prefect.resource.id": "customs.test"})
    events = EventsWorker.instance()
    intake_server(create_app(), settings)
    assert not events._stopped
    assert emit_event(event="customs.test.after", resource={"prefect.resource.id": "customs.test"}) is not None
    assert EventsWorker.instance() is events


@pytest.mark.usefixtures("prefect_harness")
def test_starts_queued_while_prefect_is_away_and_those_owed_from_before_begin_when_it_is_back(settings, company_signer):
    """Issue 18: intake never waits on Prefect. With the Prefect server away (a gate in front of it closed), the
    starter takes every start at once and only queues it; health reports Prefect down; a declaration whose start
    was lost with an earlier process (still `submitted` in the database) is owed too. When the server is back,
    all of them are started, once each."""
    from urllib.parse import urlparse

    from fastapi.testclient import TestClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from customs.api import create_app
    from customs.orchestration.deployments import DeploymentSpec, register_deployments
    from customs.orchestration.server import prefect_api
    from customs.orchestration.starting import ClearanceStarter
    from customs.services.queries import owed_clearances

    deployment_id, _ = register_deployments(
        [DeploymentSpec("owed-starts", "tests/fixtures/suspendable_flow.py:ticking", "", (), {}, ())]
    )["owed-starts"]
    harness = urlparse(PREFECT_API_URL.value())
    gate = TcpGate(harness.hostname, harness.port)  # closed: the Prefect server is away
    lost = submit_signed(company_signer, unique(sample())).application_id  # accepted before; its start was lost
    starter = ClearanceStarter(
        deployment_id, delays=(0.2, 0.5), owed=lambda: owed_clearances(older_than=timedelta(0)), timeout=2.0
    )
    app = create_app()
    app.state.start_clearance = starter
    app.state.dependencies["prefect"] = starter.status
    try:
        with prefect_api(f"http://127.0.0.1:{gate.port}/api"):
            starter.start()
            for application_id in ("A-AWAY-1", "A-AWAY-2", "A-AWAY-1"):
                starter(application_id)  # returns at once: queued
        wait_until(lambda: starter.status()["state"] == "down", "the starter to find Prefect away", 20)
        with TestClient(app) as http:
            readiness = http.get("/v1/health/ready")
        assert readiness.status_code == 200 and readiness.json()["status"] == "degraded"
        prefect = readiness.json()["dependencies"]["prefect"]
        assert prefect["state"] == "down" and prefect["starts_waiting"] == 3  # two queued, the owed one
        assert readiness.json()["dependencies"]["database"]["state"] == "up"

        gate.open()  # Prefect is back
        with get_client(sync_client=True) as client:
            ours = {"A-AWAY-1", "A-AWAY-2", lost}  # (the deployment may hold runs of earlier tests)

            def started() -> list[str]:
                return sorted(r.name for r in client.read_flow_runs() if r.deployment_id == deployment_id and r.name in ours)

            wait_until(lambda: set(started()) == ours, "the three starts to be made once Prefect is back", 30)
            assert started() == sorted(ours)  # each once
        wait_until(lambda: starter.waiting == 0, "the starter to record its last start", 10)  # created, then recorded
        assert starter.status()["state"] == "up" and starter.given_up == []
    finally:
        starter.stop()
        gate.close()


@pytest.mark.usefixtures("prefect_harness")
def test_a_clearance_start_the_server_refused_is_retried_with_backoff_and_never_doubled():
    """Intake's start of a clearance run is retried when the Prefect server refuses it (503 under load on
    SQLite), not left for the next batch-recheck; the idempotency key keeps one run per declaration."""
    from prefect.client.orchestration import get_client

    from customs.orchestration.deployments import DeploymentSpec, register_deployments
    from customs.orchestration.starting import ClearanceStarter

    deployment_id, _ = register_deployments(
        [DeploymentSpec("ticking-starts", "tests/fixtures/suspendable_flow.py:ticking", "", (), {}, ())]
    )["ticking-starts"]

    class Flaky(ClearanceStarter):
        refusals = {"A-FLAKY": 2, "A-DOWN": 99}

        def create(self, application_id):
            if self.refusals.get(application_id, 0) > 0:
                self.refusals[application_id] -= 1
                raise RuntimeError("503 Service Unavailable: database is locked")
            super().create(application_id)

    starter = Flaky(deployment_id, delays=(0.1, 0.2, 0.3))
    try:
        starter("A-FLAKY")  # refused twice, created on the second retry
        starter("A-DOWN")  # refused every time: given up after the last delay
        starter("A-OK")
        starter("A-OK")  # intake called twice for one declaration: still one run
        wait_until(lambda: starter.waiting == 0 and starter.given_up, "the retries to run out", 10)
    finally:
        starter.stop()
    assert starter.given_up == ["A-DOWN"]
    with get_client(sync_client=True) as client:
        names = sorted(r.name for r in client.read_flow_runs() if r.deployment_id == deployment_id)
    assert names == ["A-FLAKY", "A-OK"]


@pytest.mark.usefixtures("prefect_harness")
def test_a_quick_decision_while_the_suspended_attempt_still_exits_completes_the_resumed_run(
    settings, company_signer, officials, monkeypatch
):
    """The quick-decision race, on purpose. The suspended attempt's exit is held for 3 s (Prefect's heartbeat
    join used to hold it about 1 s) and the official decides at once; the old attempt's Suspended event then
    reaches the new attempt's watch late, as a slow websocket delivers it. The resumed attempt must start only
    after the old one ended, ignore that event (it happened before the new attempt was claimed), and complete."""
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.events import Event

    from customs.orchestration.decisions import resume_waiting_runs
    from customs.orchestration.worker import ClearanceWorker
    from customs.services.officials import decide
    from customs.services.queries import declaration_status
    from flows.clearance import start_clearance

    timeline: list[tuple[str, float]] = []
    execute, watch = ClearanceWorker._execute, ClearanceWorker._watch
    stale: dict = {}

    def held_exit(self, flow, attempt):
        timeline.append(("start", time.monotonic()))
        outcome = execute(self, flow, attempt)
        if outcome[0] == "paused":
            time.sleep(3)
        timeline.append(("end", time.monotonic()))
        return outcome

    def watch_then_late_event(self, attempt):
        watch(self, attempt)
        if "event" in stale and "delivered" not in stale:
            stale["delivered"] = attempt.id
            self._observer._handle_event(stale["event"])

    monkeypatch.setattr(ClearanceWorker, "_execute", held_exit)
    monkeypatch.setattr(ClearanceWorker, "_watch", watch_then_late_event)
    with clearance_worker() as (worker, deployments), get_client(sync_client=True) as client:
        application_id = submit_signed(company_signer, unique(sample("03-unpaid-vat.json"))).application_id
        run = start_clearance(application_id, deployment_id=deployments["clearance"], client=client)
        suspended = wait_until(
            lambda: (state := client.read_flow_run(run.id).state) and state.name == "Suspended" and state,
            "the run to suspend",
            60,
        )
        stale["event"] = Event(
            event="prefect.flow-run.Suspended",
            resource={"prefect.resource.id": f"prefect.flow-run.{run.id}"},
            id=suspended.id,
            occurred=suspended.timestamp,
        )
        decide(application_id, act=officials.decision(application_id, "release", INSPECTOR, code="10"))
        assert resume_waiting_runs(application_id, settle_seconds=0).flow_runs == [str(run.id)]
        wait_until(lambda: client.read_flow_run(run.id).state.is_completed(), "the resumed run to complete", 60)
        history = [state.name for state in client.read_flow_run_states(run.id)]
    assert stale.get("delivered") == run.id  # the late event did reach the resumed attempt's watch
    assert [kind for kind, _ in timeline] == ["start", "end", "start", "end"]
    assert timeline[2][1] >= timeline[1][1]  # the resumed attempt started only once the held one had ended
    assert "Crashed" not in history and history[-1] == "Completed", history
    status = declaration_status(application_id)
    assert (status["status"], status["decided_by"]) == ("released", INSPECTOR)


@pytest.mark.usefixtures("prefect_harness")
def test_a_suspended_run_resumed_in_prefect_decides_nothing_and_suspends_again(settings, company_signer, officials):
    """Issue 23: `POST /api/flow_runs/{id}/resume` naming an official released a waiting declaration. A suspended run
    has no input form now: resumed with a forged decision as run input it starts again, finds no decision, audits
    the resume as refused and suspends again (on a new wait key: Prefect skips a wait whose key already fired); the
    official's signed decision then wakes it and it completes."""
    from prefect.client.orchestration import get_client

    from customs.orchestration.decisions import resume_waiting_runs
    from customs.services.officials import decide
    from customs.services.queries import declaration_status
    from flows.clearance import start_clearance

    with clearance_worker() as (worker, deployments), get_client(sync_client=True) as client:
        application_id = submit_signed(company_signer, unique(sample("03-unpaid-vat.json"))).application_id
        run = start_clearance(application_id, deployment_id=deployments["clearance"], client=client)
        first = wait_until(
            lambda: (state := client.read_flow_run(run.id).state) and state.name == "Suspended" and state,
            "the run to suspend",
            60,
        )
        client.resume_flow_run(run.id, run_input={"decision": "release", "official_id": INSPECTOR, "grounds": []})
        wait_until(lambda: events(application_id, "official_action_refused"), "the refused resume", 60)
        wait_until(
            lambda: (state := client.read_flow_run(run.id).state) and state.name == "Suspended" and state.id != first.id,
            "the run to suspend again",
            60,
        )
        assert declaration_status(application_id)["status"] == "awaiting_official"
        decide(application_id, act=officials.decision(application_id, "release", INSPECTOR, code="10"))
        assert resume_waiting_runs(application_id, settle_seconds=0).flow_runs == [str(run.id)]
        wait_until(lambda: client.read_flow_run(run.id).state.is_completed(), "the resumed run to complete", 60)
    (refused,) = events(application_id, "official_action_refused")
    assert refused.reasons[0]["code"] == "NO_SIGNED_DECISION" and refused.actor == "prefect"
    status = declaration_status(application_id)
    assert (status["status"], status["decided_by"]) == ("released", INSPECTOR)


@pytest.mark.usefixtures("prefect_harness")
def test_the_suspension_observer_survives_a_prefect_outage_and_hears_a_suspend_when_prefect_is_back():
    """Issue 18: Prefect's own observer of suspensions stopped for good when its polls failed a few times in a
    row (a Prefect outage of ~30 s with runs in flight), so a Suspend from the UI was ignored until the worker
    restarted. The worker's observer, with the Prefect API behind a gate that is closed and opened again,
    starts its delivery again, logs the outage once, and hears the Suspend once Prefect is back."""
    import asyncio
    import logging
    from urllib.parse import urlparse

    from prefect import flow
    from prefect._internal.observers import _SuspensionWatch
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
    from prefect.states import Running, Suspended

    from customs.orchestration.suspensions import SuspensionObserver

    @flow(name="watched")
    def watched() -> None:
        pass

    harness = urlparse(PREFECT_API_URL.value())
    gate = TcpGate(harness.hostname, harness.port).open()
    warnings: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    recorder = Recorder()
    logging.getLogger("customs.worker").addHandler(recorder)

    async def until(predicate, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
            await asyncio.sleep(0.1)

    async def scenario():
        suspended = []
        async with get_client() as client:
            run = await client.create_flow_run(watched)
            await client.set_flow_run_state(run.id, Running(), force=True)
            async with SuspensionObserver(
                on_suspended=lambda flow_run_id, state: suspended.append(state), polling_interval=0.3, restart_delays=(0.5, 1.0)
            ) as observer:
                watch = _SuspensionWatch(run.id, observer._client, observer.on_suspended, logging.getLogger("test"))
                watch.initialize((await client.read_flow_run(run.id)).state)
                observer._watches[run.id] = watch
                gate.close()  # Prefect is away
                await until(lambda: observer.restarts >= 3, "the observer's delivery to stop and be started again", 90)
                assert observer.outages == 1 and observer.outage_since is not None
                gate.open()  # back
                await until(lambda: observer.outage_since is None, "the observer to find Prefect back", 60)
                await client.set_flow_run_state(run.id, Suspended(timeout_seconds=300), force=True)  # the UI's Suspend
                await until(lambda: suspended, "the Suspend to be heard", 30)
                assert suspended[0].name == "Suspended"

    try:
        with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{gate.port}/api", PREFECT_CLIENT_MAX_RETRIES: 0}):
            asyncio.run(scenario())
    finally:
        gate.close()
        logging.getLogger("customs.worker").removeHandler(recorder)
    outage = [w for w in warnings if "does not answer" in w]
    assert len(outage) == 1, warnings  # one warning for the outage, however many polls failed
    assert any("answers again" in w for w in warnings)
