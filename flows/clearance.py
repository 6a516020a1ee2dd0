"""Clearance of one declaration: one Prefect flow run per declaration, read like the procedure.

  signatures checked -> registered (or refused registration) -> lane assigned -> released (or awaiting an official)

Every step reads the declaration's state first and does nothing when its effect is already there, so
re-running a failed or finished flow run continues from where the declaration stands.
"""

from __future__ import annotations

import math
import os
import time
from typing import Annotated, Literal
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.context import get_run_context
from prefect.flow_runs import suspend_flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field

from customs.core.clock import kz_display, kz_local, utcnow
from customs.core.db import DeclarationNotFound
from customs.core.settings import get_settings
from customs.rules.outcomes import NOT_STARTED, OUTCOME_TAG_PREFIX, outcome_of
from customs.rules.privacy import mask_private
from customs.rules.reconcile import healed_by_reconciler
from customs.rules.rerun import STEPS, rerun_problem
from customs.services.intake import APPLICATION_ID_PATTERN
from customs.services.officials import refused_decisions, waiting_for_official
from customs.services.run_story import ClearanceStory, clearance_story, notices_by_kind
from customs.services.steps import StepOutcome, current_outcome
from customs.services.support import RunLogCapture, describe_error, spool_failure, withdraw_healed_failure_notices
from models.declaration import Status
from tasks.attempts import leave_if_moved_on
from tasks.clearance import record_rerun, register, release, report_failure, risk_assessment, signature_check
from tasks.notices import deliver_notices
from tasks.officials import refuse_resume_without_decision, release_deadlines

CLEARANCE_DEPLOYMENT = "clearance/clearance"

DOCUMENT_TAGS = {"kz.customs/goods-declaration@1": "goods-declaration", "kz.customs/release-statement@1": "release-statement"}

# The clearance deployment's choice of where a run starts (the steps of customs.rules.rerun.STEPS)
WHERE_IT_STOPPED = "where it stopped"
FromStep = Literal["where it stopped", "signature_check", "registration", "risk_assessment", "release"]


def run_labels(outcome: StepOutcome) -> tuple[str, list[str]]:
    """Name (registration number once there is one) and tags that let operations staff find the run; the tag
    ``outcome:<status>`` once the declaration is at a status a run ends at (customs.rules.outcomes)."""
    tags = ["clearance", f"application:{outcome.application_id}"]
    if outcome.customs_office:
        tags.append(f"office:{outcome.customs_office}")
    tags.append(f"document:{DOCUMENT_TAGS.get(outcome.schema_id or '', 'unknown')}")
    if outcome.lane:
        tags.append(f"lane:{outcome.lane}")
    ended = outcome_of(outcome.status)
    if ended is not None:
        tags.append(ended.tag)
    return outcome.registration_number or outcome.application_id, tags


def _label_run(outcome: StepOutcome | None, current: dict, *, name: str | None = None, tags: list[str] | None = None) -> None:
    """Rename and tag the run (once per change: one API call); an earlier ``outcome:`` tag is replaced."""
    if outcome is not None:
        name, tags = run_labels(outcome)
    if (name, tags) == (current.get("name"), current.get("tags")):
        return
    context = get_run_context()
    flow_run = context.flow_run
    kept = {t for t in set(flow_run.tags) | set(current.get("tags") or ()) if not t.startswith(OUTCOME_TAG_PREFIX)}
    try:
        context.client.update_flow_run(flow_run.id, name=name, tags=sorted(kept | set(tags or ())))
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


def _when(moment) -> str:
    """A time in the artifact's tables: Kazakhstan time, to the minute (the heading says so once)."""
    return kz_local(moment).strftime("%d.%m.%Y %H:%M") if moment is not None else "-"


def _cell(text: object) -> str:
    return mask_private(str(text)).replace("|", "/").replace("\n", " ")


def _summary(outcome: StepOutcome, timings: dict[str, float] | None = None, story: ClearanceStory | None = None) -> str:
    """The artifact of a clearance run: the declaration's story as far as the run took it (private persons masked)."""
    if story is not None:
        outcome = story.outcome
    ended = outcome_of(outcome.status)
    lines = [
        f"# Clearance of {outcome.application_id}: {ended.state_name if ended else outcome.status}",
        "",
        "Times are Kazakhstan time (UTC+5). Private persons are masked.",
        "",
        "| | |",
        "|---|---|",
        f"| Status | **{outcome.status}** |",
        f"| Registration number | {outcome.registration_number or '-'} |",
        f"| Customs office | {outcome.customs_office or '-'} |",
        f"| Zone | {outcome.zone or '-'} |",
        f"| Lane | {outcome.lane or '-'} |",
        f"| Risk profiles hit | {', '.join(outcome.risk_profiles) or 'none'} |",
    ]
    lines += ["", "## Signatures", ""]
    lines += [f"- {_cell(s)}" for s in outcome.signers] or [
        "- none checked" + (" (a paper declaration, entered by an official)" if story and story.channel == "paper" else "")
    ]
    lines += ["", "## Decision", ""]
    decision = story.decision if story else None
    if decision is None:
        lines.append("- no decision yet" if outcome.status not in ("registration_refused",) else "- registration refused")
    elif decision.automatic:
        lines.append(f"- automatic release, decision code **{decision.code}**, at {_when(decision.decided_at)}")
    else:
        what = f"released, decision code **{decision.code}**" if decision.code else f"**{outcome.status}**"
        lines.append(
            f"- {what}, by official **{decision.official_id}** at {_when(decision.decided_at)}; signed act "
            f"{decision.act_id or '-'}, certificate serial `{decision.cert_serial or '-'}` ({decision.algorithm or '-'})"
        )
    if outcome.reasons:
        lines += ["", "## Reasons", "", "| Code | Where | Message |", "|---|---|---|"]
        lines += [f"| {r['code']} | `{r['path']}` | {_cell(r['message'])} |" for r in outcome.reasons]
    if story is not None:
        lines += ["", "## Notices", ""]
        if story.notices:
            lines += ["| Kind | To | Delivery | Attempts | Sent at | Problem |", "|---|---|---|---|---|---|"]
            lines += [
                f"| {n.kind} | {_cell(n.recipient)} | {n.status} | {n.attempts} | {_when(n.sent_at)} "
                f"| {_cell(n.last_error or '-')} |"
                for n in story.notices
            ]
        else:
            lines.append("- none queued")
        lines += ["", "## Deadlines", "", "| Deadline | Due | Breached |", "|---|---|---|"]
        registered = f"registered {_when(story.registered_at)}" if story.registered_at else "not registered"
        lines.append(
            f"| Registration (submitted {_when(story.submitted_at)}) | {_when(story.registration_due_at)} "
            f"| {_when(story.registration_breached_at) if story.registration_breached_at else 'no'} ({registered}) |"
        )
        if outcome.release_due_at is not None:
            decided = f"decided {_when(decision.decided_at)}" if decision and decision.decided_at else "no decision yet"
            lines.append(
                f"| Release (registered {_when(story.registered_at)}) | {_when(outcome.release_due_at)} "
                f"| {_when(story.release_breached_at) if story.release_breached_at else 'no'} ({decided}) |"
            )
    if timings:
        lines += ["", "## Steps", "", "| Step | Seconds |", "|---|---|"]
        lines += [f"| {step} | {seconds:.3f} |" for step, seconds in timings.items()]
    return "\n".join(lines)


def _step_line(step: str, outcome: StepOutcome) -> str:
    """One plain line of what a step found (private persons masked), for the run's log."""
    again = "" if outcome.acted else " (done before)"
    if step == "signature_check":
        return f"signatures{again}: " + ("; ".join(outcome.signers) or "none to check (a paper declaration)")
    if step == "registration":
        if outcome.status == "registration_refused":
            reasons = "; ".join(f"{r['code']} at {r['path']}: {r['message']}" for r in outcome.reasons)
            return mask_private(f"registration refused{again}: {reasons}")
        return (
            f"registered{again} as {outcome.registration_number}, office {outcome.customs_office}, zone {outcome.zone}, "
            f"release due {kz_display(outcome.release_due_at)}"
        )
    if step == "risk_assessment":
        return f"lane {outcome.lane}{again}: risk profiles hit: {', '.join(outcome.risk_profiles) or 'none'}"
    if step == "release":
        if outcome.status == "released" and outcome.decided_by not in (None, "system"):
            return f"released{again} by official {outcome.decided_by}, decision code {outcome.decision_code}"
        if outcome.status == "released":
            return f"released{again}: automatic release, decision code {outcome.decision_code}"
        if outcome.status == "awaiting_official":
            why = ", ".join(r["code"] for r in outcome.reasons) or "lane " + str(outcome.lane)
            due = kz_display(outcome.release_due_at)
            return f"awaits an official of zone {outcome.zone}{again} ({why}); legal deadline {due}"
        return f"release step{again}: the declaration is {outcome.status}"
    return f"{step}: {outcome.status}"


def _decision_line(story: ClearanceStory) -> str:
    decision = story.decision
    if decision is None:
        return f"no decision: the declaration is {story.outcome.status}"
    return (
        f"decision: {story.outcome.status}, code {decision.code or '-'}, by official {decision.official_id} at "
        f"{kz_display(decision.decided_at)}, signed act certificate serial {decision.cert_serial or '-'}"
    )


def _read_story(application_id: str) -> ClearanceStory | None:
    try:
        return clearance_story(application_id)
    except Exception as exc:  # the story is for people; the clearance is done whatever it says
        get_run_logger().warning("%s: the run's summary could not be read: %s: %s", application_id, type(exc).__name__, exc)
        return None


def _final_state(outcome: StepOutcome) -> State:
    """Completed, named after the outcome (Released, Refused, ...: the runs list shows it), with the outcome as data."""
    ended = outcome_of(outcome.status)
    number = outcome.registration_number or outcome.application_id
    message = f"{number}: {outcome.status}" + (f", lane {outcome.lane}" if outcome.lane else "")
    if outcome.decision_code:
        message += f", decision code {outcome.decision_code}"
    if outcome.reasons and outcome.status != "released":
        message += " (" + ", ".join(r["code"] for r in outcome.reasons) + ")"
    return Completed(name=ended.state_name if ended else "Completed", message=message, data=outcome.model_dump())


def _not_started(application_id: str, error: Exception, message: str, labels: dict) -> State:
    """The request itself is refused (no such declaration, a step that cannot run): nothing was done, nothing failed
    in the system, so no support report; the run ends Failed "Not started" with a plain message, no traceback."""
    get_run_logger().error("%s: not started: %s", application_id, message)
    _label_run(None, labels, name=application_id, tags=["clearance", f"application:{application_id}", NOT_STARTED.tag])
    return Failed(name=NOT_STARTED.state_name, message=mask_private(message), data=error)


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
def clearance(
    application_id: Annotated[
        str,
        Field(
            title="Application id",
            description="The declaration's application id, as intake gave it: A, the day (yymmdd), a dash and ten "
            "letters or digits, e.g. A261207-7K3M9QX2HT.",
            pattern=APPLICATION_ID_PATTERN,
        ),
    ],
    rerun_act: int | None = None,
    wait_for_official: Annotated[
        bool,
        Field(
            title="Wait for an official's decision",
            description="On: a declaration that needs an official keeps its run waiting (suspended) for the signed "
            'decision until the legal deadline. Off: the run ends "Awaiting official" (the decision is recorded all the '
            "same, by `customs decide` or the API).",
        ),
    ] = True,
    from_step: Annotated[
        FromStep,
        Field(
            title="From step",
            description="Where the clearance starts: where the declaration stopped (the usual choice), or a named "
            "step, which must be the one the declaration stopped before (else the run is not started and says why).",
        ),
    ] = WHERE_IT_STOPPED,
) -> dict:
    """Clear one declaration from submission to release or to its next resting state.

    A declaration awaiting an official makes the run wait for the official's signed decision (recorded by
    `customs decide` or the API, which wake the run) until the legal deadline, unless ``wait_for_official`` is off.
    ``rerun_act`` is the official's signed re-run act (its id, recorded by `customs rerun` before the run
    starts): the audit chain names the act and its official; no parameter names a person. A step that fails
    beyond its retries is a failure of the information system, not the declarant's: it is reported to the
    support service (with this run's log and the declaration's state), the declarant is told, and the run
    fails so that it can be retried.

    The run ends in a state named after the outcome (Released, Refused, Awaiting official, Release cancelled) and
    is tagged ``outcome:<status>``; a declaration that does not exist, or a ``from_step`` that cannot run, ends it
    Failed "Not started" with a plain message (no support report: nothing failed).

    Args:
        application_id: The declaration's application id.
        rerun_act: The id of an official's signed re-run act (`customs rerun` records it and starts the run); empty
            for a first run.
        wait_for_official: Wait for an official's signed decision when the declaration needs one.
        from_step: Where the clearance starts.
    """
    logger = get_run_logger()
    labels: dict = {}
    flow_run = get_run_context().flow_run
    flow_run_id = str(flow_run.id)
    try:
        known = current_outcome(application_id)
    except DeclarationNotFound as exc:
        return _not_started(
            application_id,
            exc,
            f"no declaration {application_id} is stored: check the application id (`customs status {application_id}`); "
            "nothing was done",
            labels,
        )
    except Exception:  # the database may be away: the steps' own retries wait for it
        known = None
    skipped: tuple[str, ...] = ()
    if from_step != WHERE_IT_STOPPED and known is not None:
        problem = rerun_problem(Status(known.status), from_step, known.registration_number)
        if problem is not None:
            return _not_started(application_id, problem, f"cannot start from {from_step}: {problem.reason.message}", labels)
        skipped = STEPS[: STEPS.index(from_step)]
        logger.info("%s: starts from %s (%s done before)", application_id, from_step, ", ".join(skipped) or "nothing")
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

    def step_done(name: str, result: StepOutcome) -> StepOutcome:
        logger.info("%s: %s", application_id, _step_line(name, result))
        return result

    outcome = known
    with RunLogCapture(flow_run_id) as run_log:
        step = "signature_check"
        try:
            # The run is labelled (renamed to the registration number, tagged) once the steps are through, and
            # before any wait: one API call per run instead of one per step (see docs/explanation/performance.md).
            if step not in skipped:
                outcome = step_done(step, timed(step, signature_check, application_id))
            step = "registration"
            if step not in skipped:
                outcome = step_done(step, timed(step, register, application_id))
            if outcome.status != Status.REGISTRATION_REFUSED:
                step = "risk_assessment"
                if step not in skipped:
                    outcome = step_done(step, timed(step, risk_assessment, application_id))
                step = "release"
                outcome = step_done(step, timed(step, release, application_id))
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
            leave_if_moved_on()  # a stopped worker's attempt, resumed after the run went on: it reports nothing
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
    story = _read_story(application_id)
    if story is not None:
        outcome = story.outcome
        if step == "official_decision" or (story.decision is not None and not story.decision.automatic):
            logger.info("%s: %s", application_id, _decision_line(story))
        logger.info("%s: notices: %s", application_id, notices_by_kind(story.notices))
    _label_run(outcome, labels)
    create_markdown_artifact(
        key=f"clearance-{application_id.lower()}",
        markdown=_summary(outcome, timings, story),
        description=f"Outcome of {application_id}",
    )
    leave_if_moved_on()  # a stopped worker's attempt, resumed after another attempt took the run: no second end
    return _final_state(outcome)


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
