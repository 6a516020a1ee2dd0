"""Issue 24, one launch path: every clearance is a run of the `clearance` deployment executed by a worker, whoever
starts it (`customs submit`, `submit --wait`, `clear`, `rerun`, the demo; the intake API in test_serve.py). A
declaration that waits for an official has exactly one run, Suspended until its deadline, never Failed, and no
failure letter or support report is queued for it. With no worker on the pool the command runs one of its own."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from customs.cli import app
from customs.services.queries import declaration_status
from models.outbox import NoticeKind
from tests.helpers import (
    INSPECTOR,
    ROOT,
    SAMPLES,
    as_bytes,
    clearance_worker,
    flow_runs_of,
    fresh_deployments,
    notices,
    sample,
    submit_signed,
    unique,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _submit(tmp_path: Path, signer, *options: str, name: str = "03-unpaid-vat.json"):
    path = tmp_path / f"{uuid.uuid4().hex[:8]}.json"
    path.write_bytes(as_bytes(unique(sample(name))))
    Path(f"{path}.p7s").write_bytes(signer.sign(path.read_bytes()))
    result = CliRunner().invoke(app, ["submit", str(path), "--signature", f"{path}.p7s", *options])
    assert result.exit_code == 0, result.output
    return result


def _application_id(result) -> str:
    return re.search(r"A\d{6}-[0-9A-Z]+", result.stdout).group(0)


def the_one_run_waits(application_id: str, pool: str):
    """Exactly one clearance run: of the deployment, on the work pool, Suspended until the deadline or later (no
    time-out while the declaration waits), never Failed nor Crashed; no failure letter or support report queued."""
    from prefect.client.orchestration import get_client

    (run,) = flow_runs_of(application_id)
    assert run.deployment_id is not None and run.work_pool_name == pool
    assert run.state.name == "Suspended", run.state
    due = datetime.fromisoformat(declaration_status(application_id)["release_due_at"])
    due = due if due.tzinfo else due.replace(tzinfo=UTC)
    assert run.state.state_details.pause_timeout >= due
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run.id)
    assert not [s for s in states if s.is_failed() or s.is_crashed()], [s.name for s in states]
    assert notices(application_id, NoticeKind.FAILURE_REPORTED) == []
    assert notices(application_id, NoticeKind.SUPPORT_REPORT) == []
    assert declaration_status(application_id)["status"] == "awaiting_official"
    return run


def _online(pool: str) -> bool:
    from prefect.client.orchestration import get_client

    from customs.orchestration.starting import workers_serving

    with get_client(sync_client=True) as client:
        return bool(workers_serving(client, pool))


def test_submit_wait_with_no_worker_runs_the_deployment_run_here_and_a_later_decision_goes_to_any_worker(
    settings, company_signer, officials, tmp_path
):
    from customs.orchestration.worker import ClearanceWorker, WorkerThread

    pool, _ = fresh_deployments()  # nobody serves it: plain CLI use, no `customs serve`
    result = _submit(tmp_path, company_signer, "--wait", "--json")
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "awaiting_official"  # returned: Suspended is a resting state for the command
    run = the_one_run_waits(outcome["application_id"], pool)
    # `customs decide` resumes it; a worker of the pool (customs serve's, customs worker) finishes the same run
    runner = WorkerThread(ClearanceWorker(pool, poll_seconds=0.2, run_heartbeat_seconds=1, reconcile_seconds=60))
    runner.start()
    try:
        decided = CliRunner().invoke(
            app, ["decide", outcome["application_id"], "release", *officials.cli_options(INSPECTOR), "--json"]
        )
        assert decided.exit_code == 0, decided.output
        assert json.loads(decided.stdout)["flow_runs_resumed"] == [str(run.id)]
        wait_until(lambda: flow_runs_of(outcome["application_id"])[0].state.is_completed(), "the resumed run to complete")
    finally:
        runner.stop(30)
    assert [r.id for r in flow_runs_of(outcome["application_id"])] == [run.id]
    assert declaration_status(outcome["application_id"])["status"] == "released"


def test_submit_without_wait_and_no_worker_runs_it_here_until_it_rests(settings, company_signer, tmp_path):
    pool, _ = fresh_deployments()
    result = _submit(tmp_path, company_signer)
    assert "by this command's worker" in result.stdout and "waits for an official (Suspended)" in result.stdout
    the_one_run_waits(_application_id(result), pool)


def test_submit_without_wait_leaves_the_run_scheduled_for_the_pools_worker(settings, company_signer, tmp_path):
    with clearance_worker() as (worker, deployments):
        pool = worker._work_pool_name
        wait_until(lambda: _online(pool), "the worker to be online on its pool")
        result = _submit(tmp_path, company_signer)
        assert "is Scheduled on work pool" in result.stdout, result.stdout
        application_id = _application_id(result)
        wait_until(lambda: flow_runs_of(application_id)[0].state.name == "Suspended", "the pool's worker to run it")
        run = the_one_run_waits(application_id, pool)
        assert run.deployment_id == deployments["clearance"]


def test_submit_wait_while_a_worker_serves_the_pool_waits_for_that_worker(settings, company_signer, tmp_path):
    with clearance_worker() as (worker, _):
        pool = worker._work_pool_name
        wait_until(lambda: _online(pool), "the worker to be online on its pool")
        executed = worker.executed
        result = _submit(tmp_path, company_signer, "--wait")
        assert f"by a worker of pool {pool}" in result.stdout, result.stdout
        the_one_run_waits(_application_id(result), pool)
        assert worker.executed == executed + 1  # the pool's worker ran it, not one of the command's


def test_clear_creates_a_run_of_the_deployment(settings, company_signer):
    pool, deployments = fresh_deployments()
    application_id = submit_signed(company_signer, unique(sample())).application_id
    cleared = CliRunner().invoke(app, ["clear", application_id, "--json"])
    assert cleared.exit_code == 0, cleared.output
    assert json.loads(cleared.stdout.strip().splitlines()[-1])["status"] == "released"
    (run,) = flow_runs_of(application_id)
    assert (run.deployment_id, run.work_pool_name) == (deployments["clearance"], pool) and run.state.is_completed()
    again = CliRunner().invoke(app, ["clear", application_id])  # a second clear: a second run, nothing redone
    assert again.exit_code == 0 and "Released" in again.stdout, again.output  # the state named after the outcome
    assert len(flow_runs_of(application_id)) == 2


def test_the_demo_clears_each_sample_in_one_deployment_run_and_leaves_the_waiting_ones_suspended(
    settings, tmp_path, monkeypatch, capsys
):
    from customs.cli.demo import run_demo
    from customs.core.settings import configure

    configure(settings.model_copy(update={"trust_dir": None, "crl_dir": None}))  # the demo's own test PKI
    manifest = json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))
    wanted = {"01-green-household-appliances.json", "03-unpaid-vat.json"}
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "attachments").symlink_to(SAMPLES / "attachments")
    for entry in manifest["samples"]:
        if entry["file"] in wanted:
            (samples / entry["file"]).write_bytes(as_bytes(unique(sample(entry["file"]))))
    manifest["samples"] = [s for s in manifest["samples"] if s["file"] in wanted]
    (samples / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    pool, _ = fresh_deployments()
    results = {r["sample"]: r for r in run_demo(samples_dir=samples)}
    green, waiting = results["01-green-household-appliances.json"], results["03-unpaid-vat.json"]
    assert (green["status"], green["flow_run"]["state"]) == ("released", "Released")
    (run,) = flow_runs_of(green["application_id"])
    assert run.deployment_id is not None and run.work_pool_name == pool
    assert waiting["flow_run"]["state"] == "Suspended"
    assert str(the_one_run_waits(waiting["application_id"], pool).id) == waiting["flow_run"]["id"]
    # issue 31: what it waits for, and a bar over the samples
    said = capsys.readouterr()
    assert "[------------------------] 0/2 samples cleared; next: 01-green-household-appliances.json" in said.out
    assert "[########################] 2/2 samples cleared in " in said.out
    assert re.search(r"putting the work pool and the deployments on the Prefect server… ready in \d+\.\d s", said.err)
    # issue 25: anchors are required, so the demo anchors its trail: `customs audit verify` after it passes
    from customs.services.audit_anchors import verify_audit_anchors

    assert "Audit trail: anchored (anchor 1, key SHA-256 " in said.out
    check = verify_audit_anchors()
    assert check.intact and check.anchors == 1, check.problems


def test_a_plain_call_of_the_flow_does_not_wait_for_an_official(settings, company_signer):
    """clearance() called as a function has no deployment: no suspension (nothing would run it again), no pause in
    this process (issue 24); the declaration is left awaiting_official and the run completes."""
    from flows.clearance import clearance

    application_id = submit_signed(company_signer, unique(sample("03-unpaid-vat.json"))).application_id
    assert clearance(application_id)["status"] == "awaiting_official"
    (run,) = flow_runs_of(application_id)
    assert run.deployment_id is None and run.state.is_completed()
    assert notices(application_id, NoticeKind.FAILURE_REPORTED) == []


def test_no_code_path_starts_a_clearance_process_or_writes_a_pid_file_for_one():
    sources = [p for d in ("customs", "flows", "tasks", "bench") for p in (ROOT / d).rglob("*.py")]
    for path in sources + [ROOT / "Makefile", ROOT / "prefect.yaml"]:
        text = path.read_text(encoding="utf-8")
        assert "-m flows.clearance" not in text and '"flows.clearance"' not in text, path
        assert "clearance-" not in text or ".pid" not in text.split("clearance-", 1)[1][:40], path
    assert "__main__" not in (ROOT / "flows" / "clearance.py").read_text(encoding="utf-8")
    from customs.orchestration import starting

    assert not hasattr(starting, "start_in_background") and not hasattr(starting, "stop_background_clearances")
