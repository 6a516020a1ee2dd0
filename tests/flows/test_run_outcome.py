"""Issue 24, part 2: the outcome in the Prefect UI. Each clearance run says how it ended (state name, outcome tag),
its log has one plain line per step, its artifact tells the declaration's story, no warning shows on every run,
and the clearance deployment's run form is typed, with a wrong application id refused plainly. Everything is read
back from the Prefect server, as operations staff see it."""

from __future__ import annotations

import contextvars
import logging
import re
import threading

import pytest

from customs.services.intake import APPLICATION_ID_PATTERN, submit_declaration
from flows.clearance import clearance
from tests.helpers import INSPECTOR, as_bytes, clearance_worker, flow_runs_of, sample, unique, wait_until

pytestmark = pytest.mark.usefixtures("prefect_harness")

UNKNOWN_ID = "A000101-0000000000"  # the shape of an application id, no declaration of it


def submit(signer, document) -> str:
    content = as_bytes(document)
    return submit_declaration(content, signer.sign(content)).application_id


def _flush_run_logs() -> None:
    from prefect.logging.handlers import APILogHandler

    for name in ("prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, APILogHandler):
                handler.flush()


def _logs(run_id, until: str | None = None) -> list[str]:
    """The run's log messages as stored by the Prefect server (all of them once one contains ``until``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    def read():
        _flush_run_logs()
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200, sort=LogSort.TIMESTAMP_ASC
            )
        messages = [log.message for log in logs]
        return messages if until is None or any(until in m for m in messages) else None

    return wait_until(read, f"the run's log {until!r}", 30)


def _artifact(application_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"clearance-{application_id.lower()}"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return artifact.data


def _run(application_id: str):
    (run,) = flow_runs_of(application_id)
    return run


def _outcome_tags(run) -> list[str]:
    return [t for t in run.tags if t.startswith("outcome:")]


def test_a_released_run_is_named_released_tagged_and_logs_and_shows_what_each_step_found(settings, company_signer):
    application_id = submit(company_signer, unique(sample()))
    result = clearance(application_id)
    assert result["status"] == "released"
    run = _run(application_id)
    assert run.state.is_completed() and run.state.name == "Released"
    assert run.state.message.startswith(result["registration_number"]) and "decision code 10" in run.state.message
    assert _outcome_tags(run) == ["outcome:released"]

    logs = _logs(run.id, "notices:")
    mine = [m for m in logs if m.startswith(f"{application_id}: ")]
    number = result["registration_number"]
    expected = [
        r"signatures: declaration: .+ \(BIN 050840001233; .+\) valid",
        rf"registered as {re.escape(number)}, office 50101, zone ALA-TSW, release due .+",
        r"lane green: risk profiles hit: none",
        r"released: automatic release, decision code 10",
        r"notices: acceptance sent, registration sent, release sent",
    ]
    assert len(mine) == len(expected), mine
    for line, pattern in zip(mine, expected, strict=True):
        assert re.fullmatch(f"{re.escape(application_id)}: {pattern}", line), (line, pattern)
    assert not any("{'" in m or '{"' in m for m in logs), logs  # no Python dicts
    assert not any("Timeout of" in m for m in logs)

    story = _artifact(application_id)
    assert f"# Clearance of {application_id}: Released" in story
    for part in ("## Signatures", "## Decision", "automatic release, decision code **10**", "## Notices", "## Deadlines"):
        assert part in story, part
    assert re.search(r"\| release \| .+ \| sent \| 1 \|", story), story
    assert "| Release (registered " in story and "| Lane | green |" in story


def test_a_refused_registration_is_named_refused_and_tagged_so(settings, company_signer):
    document = unique(sample())
    document["totals"]["items"] = 7
    application_id = submit(company_signer, document)
    assert clearance(application_id)["status"] == "registration_refused"
    run = _run(application_id)
    assert (run.state.type.value, run.state.name) == ("COMPLETED", "Refused")
    assert "TOTALS_MISMATCH" in run.state.message
    assert _outcome_tags(run) == ["outcome:registration_refused"]
    assert any(m.startswith(f"{application_id}: registration refused: TOTALS_MISMATCH at ") for m in _logs(run.id, "notices:"))
    assert "registration refused" in _artifact(application_id)


def test_an_official_decision_retags_the_run_and_the_artifact_names_the_official_and_the_act(settings, company_signer, officials):
    from customs.services.officials import decide

    application_id = submit(company_signer, unique(sample("03-unpaid-vat.json")))
    assert clearance(application_id, wait_for_official=False)["status"] == "awaiting_official"
    run = _run(application_id)
    assert (run.state.type.value, run.state.name) == ("COMPLETED", "Awaiting official")
    assert _outcome_tags(run) == ["outcome:awaiting_official"]
    assert any("awaits an official of zone ALA-TSW (PAYMENT_NOT_PAID" in m for m in _logs(run.id, "notices:"))

    decide(application_id, act=officials.decision(application_id, "refuse", INSPECTOR, grounds=["CONDITIONS_NOT_MET"]))
    assert clearance(application_id)["status"] == "release_refused"
    runs = {r.state.name: r for r in flow_runs_of(application_id)}
    refused = runs["Refused"]
    assert _outcome_tags(refused) == ["outcome:release_refused"]
    decision = [m for m in _logs(refused.id, "notices:") if ": decision: " in m]
    (act,) = _decision_acts(application_id)
    assert len(decision) == 1, decision
    assert f"by official {INSPECTOR}" in decision[0] and f"signed act certificate serial {act.cert_serial}" in decision[0]
    story = _artifact(application_id)
    assert f"**release_refused**, by official **{INSPECTOR}**" in story and f"certificate serial `{act.cert_serial}`" in story
    assert "| release_refusal |" in story
    # A release by an official is said to be one, not "automatic" (the demo's resumed run said so).
    released = submit(company_signer, unique(sample("03-unpaid-vat.json")))
    clearance(released, wait_for_official=False)
    decide(released, act=officials.decision(released, "release", INSPECTOR, code="11"))
    assert clearance(released)["status"] == "released"
    last = [r for r in flow_runs_of(released) if r.state.name == "Released"][0]
    lines = [m for m in _logs(last.id, "notices:") if ": released (done before)" in m]
    assert lines and all(f"by official {INSPECTOR}, decision code 11" in m and "automatic" not in m for m in lines), lines


def _decision_acts(application_id: str):
    from sqlmodel import select

    from customs.core.db import transaction
    from models.official_act import SignedOfficialAct

    with transaction() as session:
        query = select(SignedOfficialAct).where(
            SignedOfficialAct.application_id == application_id, SignedOfficialAct.act == "decide"
        )
        return session.exec(query).all()


def test_a_wrong_application_id_is_a_plain_refusal_with_no_traceback_and_no_support_report(settings):
    from prefect.client.schemas.objects import StateType

    from customs.core.db import DeclarationNotFound
    from customs.orchestration.automations import CLEARANCE_FAILED, alerting_automations
    from customs.services.ops_alerts import FAILED_RUN_EVENTS
    from models.outbox import NoticeKind
    from tests.helpers import notices

    with pytest.raises(DeclarationNotFound):  # called in Python, as before: the caller learns it as an exception
        clearance(UNKNOWN_ID)
    state = clearance(UNKNOWN_ID, return_state=True)
    assert (state.type, state.name) == (StateType.FAILED, "Not started")
    assert "no declaration A000101-0000000000 is stored: check the application id" in state.message
    runs = flow_runs_of(UNKNOWN_ID)
    assert runs and all(r.state.name == "Not started" for r in runs)
    assert all(_outcome_tags(r) == ["outcome:not_started"] for r in runs)
    logs = _logs(runs[0].id, "not started")
    assert not any("Traceback" in m for m in logs), logs
    # Prefect names the state's event after it: not one the failure automation is triggered by, so no support report.
    assert f"prefect.flow-run.{state.name}" not in FAILED_RUN_EVENTS
    (failed,) = [a for a in alerting_automations("00000000-0000-0000-0000-000000000000", settings) if a.name == CLEARANCE_FAILED]
    assert f"prefect.flow-run.{state.name}" not in failed.trigger.expect
    assert notices(UNKNOWN_ID, NoticeKind.SUPPORT_REPORT) == []


def test_the_zombie_run_automation_takes_every_outcome_state_as_an_end():
    """Prefect names a state's event after the state: a run ending "Released" emits prefect.flow-run.Released, which the
    automation that crashes runs whose heartbeats stopped must count as an end (else it would crash a finished run)."""
    from customs.orchestration.automations import _RUN_ENDED
    from customs.rules.outcomes import final_state_names

    names = {"Released", "Refused", "Awaiting official", "Release cancelled", "Not started"}
    assert final_state_names() == names
    assert {f"prefect.flow-run.{name}" for name in names} <= _RUN_ENDED


def test_a_from_step_that_cannot_run_is_not_started_and_one_that_can_skips_the_steps_done(settings, company_signer, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    import customs.services.steps as steps

    released = submit(company_signer, unique(sample()))
    clearance(released)
    state = clearance(released, from_step="registration", return_state=True)
    assert (state.type.value, state.name) == ("FAILED", "Not started")
    assert "cannot start from registration: registration is done" in state.message

    def broken(*args, **kwargs):
        raise RuntimeError("risk profile service unavailable")

    stopped = submit(company_signer, unique(sample()))
    monkeypatch.setattr(steps, "assess_risk", broken)
    with pytest.raises(RuntimeError):
        clearance(stopped)
    monkeypatch.undo()
    assert clearance(stopped, from_step="risk_assessment")["status"] == "released"
    run = next(r for r in flow_runs_of(stopped) if r.state.name == "Released")
    with get_client(sync_client=True) as client:
        tasks = {
            t.task_key.split("-")[0]
            for t in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        }
    assert {"risk_assessment", "release"} <= tasks and not tasks & {"signature_check", "register"}, tasks
    assert any("starts from risk_assessment (signature_check, registration done before)" in m for m in _logs(run.id, "notices:"))


def test_the_deployment_form_is_typed_and_a_malformed_id_is_refused_before_any_run(settings):
    import jsonschema

    from customs.core.clock import utcnow
    from customs.orchestration.deployments import parameter_schema
    from customs.rules.rerun import STEPS
    from customs.services.intake import new_application_id

    schema = parameter_schema(clearance)
    props = schema["properties"]
    assert props["application_id"]["title"] == "Application id" and props["application_id"]["pattern"] == APPLICATION_ID_PATTERN
    assert props["from_step"]["enum"] == ["where it stopped", *STEPS] and props["from_step"]["title"] == "From step"
    assert props["wait_for_official"]["title"] == "Wait for an official's decision" and props["wait_for_official"]["description"]
    assert props["rerun_act"] == {
        "type": "integer",
        "title": "Rerun act",
        "position": 1,
        "description": props["rerun_act"]["description"],
    }  # a plain number field: no "int | None" toggle; the flow's parameter is still rerun_act: int | None = None
    assert "re-run act" in props["rerun_act"]["description"]
    assert all(p["title"] != name for name, p in props.items())
    assert re.fullmatch(APPLICATION_ID_PATTERN, new_application_id(utcnow()))
    jsonschema.validate({"application_id": UNKNOWN_ID, "rerun_act": 3}, schema)
    for wrong in ("a000101-0000000000", "A000101-000000000", "50101/081226/0000001", " A000101-0000000000", "A000101-00000000IO"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"application_id": wrong}, schema)


def test_runs_executed_by_the_worker_show_no_timeout_warning_and_a_malformed_id_makes_no_run(settings, company_signer):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    from customs.orchestration.deployments import ensure_saved_searches

    application_id = submit(company_signer, unique(sample()))
    with clearance_worker() as (worker, deployments), get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployments["clearance"], parameters={"application_id": application_id})
        missing = client.create_flow_run_from_deployment(deployments["clearance"], parameters={"application_id": UNKNOWN_ID})
        with pytest.raises(PrefectHTTPStatusError) as refused:  # the server checks the form's pattern: no run at all
            client.create_flow_run_from_deployment(deployments["clearance"], parameters={"application_id": "a261207-typo"})
        assert refused.value.response.status_code in (409, 422)
        done = wait_until(
            lambda: all(client.read_flow_run(r.id).state.is_final() for r in (run, missing)) and True, "both runs to end", 60
        )
        assert done
        ended = client.read_flow_run(run.id)
        gone = client.read_flow_run(missing.id)
    assert ended.state.name == "Released" and "outcome:released" in ended.tags
    assert gone.state.name == "Not started" and "no declaration" in gone.state.message
    for flow_run in (ended, gone):
        logs = _logs(flow_run.id, "Finished in state")
        assert not any("Timeout of" in m or "worker thread" in m for m in logs), logs
        assert not any("Traceback" in m for m in logs), logs

    with get_client(sync_client=True) as client:
        ensure_saved_searches(client)
        searches = {s["name"]: s["filters"] for s in client.request("POST", "/saved_searches/filter", json={}).json()}
    for tag in ("released", "registration_refused", "release_refused", "awaiting_official", "release_cancelled"):
        assert [{"property": "tag", "value": [f"outcome:{tag}"]}.items() <= f.items() for f in searches[_search_of(tag)]] == [
            True
        ]


def _search_of(status: str) -> str:
    from customs.rules.outcomes import OUTCOMES
    from models.declaration import Status

    return OUTCOMES[Status(status)].search


def test_a_task_past_its_time_limit_is_stopped_in_a_worker_thread_without_prefect_s_warning(caplog):
    """tasks.policy.time_limit replaces Prefect's timeout_seconds: the same limit, kept in a worker thread (as the
    clearance worker runs flows), without Prefect's warning at every task run."""
    import time

    from prefect import flow, task

    from tasks.policy import StepTimeLimitExceeded, time_limit

    @task(name="slow-step")
    @time_limit(0.5)
    def slow() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pass

    @task(name="quick-step")
    @time_limit(5)
    def quick() -> str:
        return "done"

    @flow(name="time-limit-check")
    def limited() -> tuple[str, str]:
        try:
            slow()
        except StepTimeLimitExceeded as exc:
            return quick(), str(exc)
        return quick(), "not stopped"

    seen: dict = {}
    context = contextvars.copy_context()
    started = time.monotonic()
    thread = threading.Thread(target=lambda: seen.update(result=context.run(limited)))
    with caplog.at_level(logging.INFO, logger="prefect"):
        thread.start()
        thread.join(30)
    assert seen["result"] == ("done", "slow ran past its time limit of 0.5 s and was stopped")
    assert time.monotonic() - started < 8
    assert not [r for r in caplog.records if "Timeout of" in r.getMessage() or "worker thread" in r.getMessage()]


def test_no_sync_task_uses_prefect_s_timeout_and_each_keeps_a_time_limit():
    """The cause of the warning removed: no sync task sets timeout_seconds (Prefect warns at each run of one outside
    the main thread); each that had one keeps its limit through tasks.policy.time_limit (async tasks keep Prefect's
    timeout, which cancels them cleanly and does not warn)."""
    import importlib
    import pkgutil

    from prefect import Task

    import tasks

    found = {}
    for module in pkgutil.iter_modules(tasks.__path__):
        for name, value in vars(importlib.import_module(f"tasks.{module.name}")).items():
            if isinstance(value, Task):
                found[f"{module.name}.{name}"] = value
    assert len(found) >= 15, found
    for name, task in found.items():
        if task.isasync:
            continue
        assert task.timeout_seconds is None, name
    limited = {name for name, task in found.items() if getattr(task.fn, "time_limit", None)}
    assert {"clearance.signature_check", "clearance.register", "notices.deliver_notices", "crl.refresh_crls_task"} <= limited
