"""Clearance of one declaration: one Prefect flow run per declaration, read like the procedure.

  signatures checked -> registered (or refused registration) -> lane assigned -> released (or awaiting an official)

Every step reads the declaration's state first and does nothing when its effect is already there, so
re-running a failed or finished flow run continues from where the declaration stands.
"""

from __future__ import annotations

import math
import os
import time
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.context import get_run_context
from prefect.flow_runs import suspend_flow_run

from customs.core.clock import kz_display, utcnow
from customs.core.db import DeclarationNotFound
from customs.core.settings import get_settings
from customs.rules.privacy import mask_private
from customs.rules.reconcile import healed_by_reconciler
from customs.services.officials import refused_decisions, waiting_for_official
from customs.services.steps import StepOutcome, current_outcome
from customs.services.support import RunLogCapture, describe_error, spool_failure, withdraw_healed_failure_notices
from models.declaration import Status
from tasks.clearance import record_rerun, register, release, report_failure, risk_assessment, signature_check
from tasks.notices import deliver_notices
from tasks.officials import refuse_resume_without_decision, release_deadlines

CLEARANCE_DEPLOYMENT = "clearance/clearance"

DOCUMENT_TAGS = {"kz.customs/goods-declaration@1": "goods-declaration", "kz.customs/release-statement@1": "release-statement"}


def run_labels(outcome: StepOutcome) -> tuple[str, list[str]]:
    """Name (registration number once there is one) and tags that let operations staff find the run."""
    tags = ["clearance", f"application:{outcome.application_id}"]
    if outcome.customs_office:
        tags.append(f"office:{outcome.customs_office}")
    tags.append(f"document:{DOCUMENT_TAGS.get(outcome.schema_id or '', 'unknown')}")
    if outcome.lane:
        tags.append(f"lane:{outcome.lane}")
    return outcome.registration_number or outcome.application_id, tags


def _label_run(outcome: StepOutcome, current: dict) -> None:
    name, tags = run_labels(outcome)
    if (name, tags) == (current.get("name"), current.get("tags")):
        return
    context = get_run_context()
    flow_run = context.flow_run
    try:
        context.client.update_flow_run(flow_run.id, name=name, tags=sorted(set(flow_run.tags) | set(tags)))
        current.update(name=name, tags=tags)
    except Exception as exc:  # labels help people find runs; they never stop a clearance
        get_run_logger().warning("could not label the flow run %s: %s", flow_run.id, exc)


def _test_pause_at(step: str) -> None:
    """Test-only hook for the fault-injection suite (bench/chaos.py), never set in service: with
    CUSTOMS_TEST_PAUSE_AT_STEP=<step> (signature_check, registration, risk_assessment, release, notices) every run
    waits at the start of that step, for CUSTOMS_TEST_PAUSE_SECONDS (600) at most and, when
    CUSTOMS_TEST_PAUSE_WHILE names a file, only while that file exists: a kill -9 lands there, or the held runs
    are let go into a fault all at once."""
    hold = os.environ.get("CUSTOMS_TEST_PAUSE_WHILE")
    if os.environ.get("CUSTOMS_TEST_PAUSE_AT_STEP") != step or (hold is not None and not os.path.exists(hold)):
        return
    get_run_logger().warning("test hook: holding the run at the start of step %s", step)
    until = time.monotonic() + float(os.environ.get("CUSTOMS_TEST_PAUSE_SECONDS", "600"))
    while time.monotonic() < until and (hold is None or os.path.exists(hold)):
        time.sleep(0.2)


def _summary(outcome: StepOutcome, timings: dict[str, float] | None = None) -> str:
    lines = [
        f"# Clearance of {outcome.application_id}",
        "",
        "| | |",
        "|---|---|",
        f"| Status | **{outcome.status}** |",
        f"| Registration number | {outcome.registration_number or '-'} |",
        f"| Customs office | {outcome.customs_office or '-'} |",
        f"| Lane | {outcome.lane or '-'} |",
    ]
    if timings:
        lines += ["", "## Steps", "", "| Step | Seconds |", "|---|---|"]
        lines += [f"| {step} | {seconds:.3f} |" for step, seconds in timings.items()]
    if outcome.reasons:
        lines += ["", "## Reasons", "", "| Code | Where | Message |", "|---|---|---|"]
        lines += [f"| {r['code']} | `{r['path']}` | {mask_private(r['message']).replace('|', '/')} |" for r in outcome.reasons]
    return "\n".join(lines)


def _recovered(application_id: str, flow_run_id: str) -> None:
    """A re-run got through the steps: the declarant's notices of earlier failures still held are withdrawn."""
    try:
        withdrawn = withdraw_healed_failure_notices(application_id, f"clearance run {flow_run_id} got through its steps again")
    except Exception as exc:  # the notices stay held; the outbox withdraws them too when the status moved on
        get_run_logger().warning("%s: held failure notices not withdrawn now: %s", application_id, exc)
        return
    if withdrawn:
        get_run_logger().info("%s: recovered; %d held failure notice(s) to the declarant withdrawn", application_id, withdrawn)


def _send_notices(application_id: str) -> None:
    """Send what the steps queued right away; what cannot go now stays in the outbox for outbox-dispatch (a
    slow or absent SMTP server costs the run a few seconds at most: ``in_clearance``)."""
    state = deliver_notices(application_id, in_clearance=True, return_state=True)
    if state.is_failed():
        get_run_logger().warning("notices of %s stay queued for outbox-dispatch: %s", application_id, state.message)


class ReleaseDeadlinePassed(Exception):
    """The legal release deadline passed with no decision: the breach is recorded, supervisors were told."""


class DecisionWaitInterrupted(Exception):
    """Waiting for the decision stopped (the Prefect server went away); the declaration still waits in the database."""


def _artifact_key(application_id: str) -> str:
    return f"decision-{application_id.lower()}"


def _publish_decision_details(application_id: str, info: dict, refused: list[dict]) -> None:
    reasons = "\n".join(f"| {r['code']} | `{r['path']}` | {mask_private(r['message'])} |" for r in info["reasons"]) or "| - | | |"
    text = [
        f"## Decision on {info['registration_number']}",
        f"Application {application_id}, customs office {info['office']}, zone **{info['zone']}**, lane **{info['lane']}** "
        f"({', '.join(info['risk_profiles']) or 'no risk profile'}). Legal deadline **{kz_display(info['release_due_at'])}**: "
        "after it only a supervisor of the zone may decide, and the decision is recorded as late.",
        "### Why it waits for an official",
        "| code | where | what |\n|---|---|---|\n" + reasons,
    ]
    if refused:
        rows = "\n".join(
            f"| {a['at']} | {a['official_id']} | {a['decision']} | {a['code']} | {mask_private(a['message'])} |" for a in refused
        )
        text += ["### Decisions not accepted", "| at | official | decision | code | why |\n|---|---|---|---|---|\n" + rows]
    create_markdown_artifact(
        key=_artifact_key(application_id), markdown="\n\n".join(text), description=f"Decision on {application_id}"
    )


def _wait_for_decision(timeout: int) -> None:
    """Wait with no input form: a decision is an official's signed act, given outside Prefect, and the run is woken
    when one is recorded. The run suspends (Suspended, until ``timeout``: the deadline and the supervisors' time
    after it): its attempt ends and the worker lets it go; the resumed run is picked up by any worker of the pool,
    starts again, and its finished steps skip. There is no waiting in a process: a run paused in its own process
    for a while at a time was marked Failed by the server ("paused and never resumed") between two waits (issue 24)."""
    suspend_flow_run(timeout=timeout, key=_wait_key())


def _resumed_earlier() -> bool:
    """This attempt follows a suspension of the same run: something resumed it (the Prefect API or UI, or
    `customs decide` / the API after a decision was recorded), or it is the same run again."""
    return bool(get_run_context().flow_run.empirical_policy.pause_keys)


def _wait_key() -> str:
    """A key per suspension: Prefect keeps the keys of suspensions that fired and skips a wait whose key it knows,
    and each attempt of a suspended run suspends once (the attempt ends), so the n-th attempt waits on key n."""
    return f"decision-wait-{len(get_run_context().flow_run.empirical_policy.pause_keys) + 1}"


def _await_official(application_id: str) -> None:
    """Wait for an official's decision until the legal deadline, then (breach recorded) for a supervisor's late
    decision until ``decision_wait_after_deadline`` has passed too. The decision is an official's signed act, recorded
    in the database by `customs decide` or the API, which then wake this run; the run only reads it. A run woken
    with no decision recorded (resumed in the Prefect UI or API) decides nothing: the attempt is audited as refused
    (NO_SIGNED_DECISION) and the run waits again."""
    logger = get_run_logger()
    flow_run_id = str(get_run_context().flow_run.id)
    settings = get_settings()
    woken = _resumed_earlier()
    while True:
        info = waiting_for_official(application_id)
        if info["status"] != "awaiting_official":
            logger.info("%s: %s by an official's signed decision", info["registration_number"], info["status"])
            return
        if woken:
            refuse_resume_without_decision(application_id, flow_run_id)
            logger.warning(
                "%s: resumed without a decision; nothing is decided, the run waits again. Officials decide with their "
                "own NCA key: `customs decide` or POST /v1/declarations/{id}/decision (docs: tutorials/officials.md)",
                info["registration_number"],
            )
            woken = False
        due = info["release_due_at"] or utcnow()
        give_up_at = due + settings.decision_wait_after_deadline
        now = utcnow()
        if now >= due:
            release_deadlines(application_id, max(now, due))  # records the breach (once) and alerts the supervisors
        if now >= give_up_at:
            _send_notices(application_id)
            raise ReleaseDeadlinePassed(
                f"{info['registration_number']}: no decision by {kz_display(due)} "
                "(the legal deadline; the breach is recorded and the zone's supervisors alerted) "
                f"nor by {kz_display(give_up_at)}; a supervisor can still decide with `customs decide`"
            )
        _send_notices(application_id)
        logger.info(
            "%s waits for an official of zone %s; legal deadline %s. Decide with a signed act: `customs decide` or "
            "POST /v1/declarations/{id}/decision (resuming this run in Prefect decides nothing)",
            info["registration_number"],
            info["zone"],
            kz_display(due),
        )
        _publish_decision_details(application_id, info, refused_decisions(application_id))
        try:
            _wait_for_decision(math.ceil((give_up_at - now).total_seconds()))
        except Exception as exc:  # orchestration, not clearance: `customs decide` works without this run
            raise DecisionWaitInterrupted(
                f"{info['registration_number']}: stopped waiting for a decision: {type(exc).__name__}: {exc}"
            ) from exc
        woken = True  # a suspension returns here only when Prefect skipped it (its key known): treated as woken


@flow(name="clearance", flow_run_name="{application_id}", persist_result=False, log_prints=False)
def clearance(application_id: str, rerun_act: int | None = None, wait_for_official: bool = True) -> dict:
    """Clear one declaration from submission to release or to its next resting state.

    A declaration awaiting an official makes the run wait for the official's signed decision (recorded by
    `customs decide` or the API, which wake the run) until the legal deadline, unless ``wait_for_official`` is off.
    ``rerun_act`` is the official's signed re-run act (its id, recorded by `customs rerun` before the run
    starts): the audit chain names the act and its official; no parameter names a person. A step that fails
    beyond its retries is a failure of the information system, not the declarant's: it is reported to the
    support service (with this run's log and the declaration's state), the declarant is told, and the run
    fails so that it can be retried.
    """
    logger = get_run_logger()
    labels: dict = {}
    flow_run = get_run_context().flow_run
    flow_run_id = str(flow_run.id)
    if rerun_act is not None or flow_run.run_count > 1:  # `customs rerun`, or the same run again (the UI's Retry)
        record_rerun(application_id, rerun_act, flow_run_id, flow_run.run_count)

    timings: dict[str, float] = {}

    def timed(name: str, call, *args):
        _test_pause_at(name)
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

    with RunLogCapture(flow_run_id) as run_log:
        step = "signature_check"
        try:
            # The run is labelled (renamed to the registration number, tagged) once the steps are through, and
            # before any wait: one API call per run instead of one per step (see docs/explanation/performance.md).
            outcome = timed(step, signature_check, application_id)
            step = "registration"
            outcome = timed(step, register, application_id)
            if outcome.status == Status.REGISTRATION_REFUSED:
                logger.info("%s refused registration: %s", application_id, ", ".join(r["code"] for r in outcome.reasons))
            else:
                step = "risk_assessment"
                outcome = timed(step, risk_assessment, application_id)
                step = "release"
                outcome = timed(step, release, application_id)
                logger.info("%s (%s) is %s, lane %s", application_id, outcome.registration_number, outcome.status, outcome.lane)
            _label_run(outcome, labels)
            if rerun_act is not None or flow_run.run_count > 1:
                _recovered(application_id, flow_run_id)
            if outcome.status == Status.AWAITING_OFFICIAL and wait_for_official and flow_run.deployment_id is None:
                # Called as a plain function (tests, a script): there is no worker to give the resumed run to, so
                # nothing waits; `customs decide` records the decision all the same (issue 24: no pausing in a process).
                logger.info(
                    "%s awaits an official; not waiting: this run has no deployment (only runs of the clearance "
                    "deployment suspend for the decision)",
                    application_id,
                )
            elif outcome.status == Status.AWAITING_OFFICIAL and wait_for_official:
                step = "official_decision"
                timed(step, _await_official, application_id)
                outcome = current_outcome(application_id)
        except DeclarationNotFound:
            raise  # nothing to report on: the caller named no stored declaration
        except (ReleaseDeadlinePassed, DecisionWaitInterrupted):
            raise  # not a failure of a clearance step: nobody decided in time, or the wait itself was cut off
        except Exception as exc:
            logger.error("%s: step %s failed beyond its retries: %s: %s", application_id, step, type(exc).__name__, exc)
            try:
                _label_run(current_outcome(application_id), labels)
            except Exception:  # the database may be what failed
                pass
            # A database failure the reconciler will run again: the declarant hears of it only if that does not heal it.
            hold = healed_by_reconciler(
                f"{type(exc).__name__}: {exc}", flow_run.run_count, max_attempts=get_settings().reconcile_max_attempts
            )
            report = report_failure(
                application_id,
                step,
                describe_error(step, exc),
                run_log.text(),
                flow_run_id,
                flow_run.run_count,
                hold,
                return_state=True,
            )
            if report.is_completed():
                logger.error("%s: reported to the support service as %s", application_id, report.result())
            else:
                try:  # the database is away: kept on this host's disk, reported by the worker when it is back
                    spool_failure(
                        application_id,
                        step=step,
                        error=describe_error(step, exc),
                        run_log=run_log.text(),
                        flow_run_id=flow_run_id,
                        run_count=flow_run.run_count,
                        hold=hold,
                    )
                    logger.error(
                        "%s: the support report could not be queued (%s); kept to be reported when the database is back",
                        application_id,
                        report.message,
                    )
                except Exception as spool_error:
                    logger.error(
                        "%s: the support report could be neither queued (%s) nor kept (%s)",
                        application_id,
                        report.message,
                        spool_error,
                    )
            _send_notices(application_id)
            raise
    timed("notices", _send_notices, application_id)
    create_markdown_artifact(
        key=f"clearance-{application_id.lower()}", markdown=_summary(outcome, timings), description=f"Outcome of {application_id}"
    )
    return outcome.model_dump()


def start_clearance(
    application_id: str,
    *,
    rerun_act: int | None = None,
    idempotency_key: str | None = None,
    deployment_id: UUID | None = None,
    client: SyncPrefectClient | None = None,
) -> FlowRun:
    """Create a run of the clearance deployment for one declaration: the one way every caller starts one (intake
    through customs serve, batch-recheck, `customs recheck --restart`, and the commands through
    customs.orchestration.starting.Launcher: `submit`, `submit --wait`, `clear`, `rerun`, the demo).

    The idempotency key (default ``intake:<application id>``) makes a retried call after an ambiguous
    failure (the run was created, the answer lost) return the same run instead of a second one.
    """
    if client is None:
        with get_client(sync_client=True) as client:  # inside a flow run: the run's own client
            return start_clearance(
                application_id,
                rerun_act=rerun_act,
                idempotency_key=idempotency_key,
                deployment_id=deployment_id,
                client=client,
            )
    if deployment_id is None:
        deployment_id = client.read_deployment_by_name(CLEARANCE_DEPLOYMENT).id
    parameters = {"application_id": application_id} | ({"rerun_act": rerun_act} if rerun_act is not None else {})
    return client.create_flow_run_from_deployment(
        deployment_id,
        parameters=parameters,
        name=application_id,
        tags=["clearance", f"application:{application_id}"],
        idempotency_key=idempotency_key or f"intake:{application_id}",
    )
