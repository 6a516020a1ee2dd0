"""Clearance of one declaration: one Prefect flow run per declaration, read like the procedure.

  signatures checked -> registered (or refused registration) -> lane assigned -> released (or awaiting an official)

Every step reads the declaration's state first and does nothing when its effect is already there, so
re-running a failed or finished flow run continues from where the declaration stands.
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.context import get_run_context

from models.declaration import Status
from tasks.common import DeclarationNotFound, StepOutcome
from tasks.outbox import deliver_notices
from tasks.registration import register
from tasks.release import release
from tasks.risk import risk_assessment
from tasks.signature import signature_check
from tasks.support import RunLogCapture, describe_error, report_failure

DOCUMENT_TAGS = {"kz.customs/goods-declaration@1": "goods-declaration", "kz.customs/release-statement@1": "release-statement"}


def run_labels(outcome: StepOutcome) -> tuple[str, list[str]]:
    """Name (registration number once there is one) and tags that let operations staff find the run."""
    tags = ["clearance"]
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
    flow_run = get_run_context().flow_run
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=name, tags=sorted(set(flow_run.tags) | set(tags)))
        current.update(name=name, tags=tags)
    except Exception as exc:  # labels help people find runs; they never stop a clearance
        get_run_logger().warning("could not label the flow run %s: %s", flow_run.id, exc)


def _summary(outcome: StepOutcome) -> str:
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
    if outcome.reasons:
        lines += ["", "## Reasons", "", "| Code | Where | Message |", "|---|---|---|"]
        lines += [f"| {r['code']} | `{r['path']}` | {r['message'].replace('|', '/')} |" for r in outcome.reasons]
    return "\n".join(lines)


def _send_notices(application_id: str) -> None:
    """Send what the steps queued right away; what cannot go now stays in the outbox for outbox-dispatch."""
    state = deliver_notices(application_id, return_state=True)
    if state.is_failed():
        get_run_logger().warning("notices of %s stay queued for outbox-dispatch: %s", application_id, state.message)


@flow(name="clearance", flow_run_name="{application_id}", persist_result=False, log_prints=False)
def clearance(application_id: str) -> dict:
    """Clear one declaration from submission to release or to its next resting state.

    A step that fails beyond its retries is a failure of the information system, not the declarant's:
    it is reported to the support service (with this run's log and the declaration's state), the
    declarant is told, and the run fails so that it can be retried.
    """
    logger = get_run_logger()
    labels: dict = {}
    flow_run_id = str(get_run_context().flow_run.id)

    with RunLogCapture(flow_run_id) as run_log:
        step = "signature_check"
        try:
            outcome = signature_check(application_id)
            _label_run(outcome, labels)
            step = "registration"
            outcome = register(application_id)
            _label_run(outcome, labels)
            if outcome.status == Status.REGISTRATION_REFUSED:
                logger.info("%s refused registration: %s", application_id, ", ".join(r["code"] for r in outcome.reasons))
            else:
                step = "risk_assessment"
                outcome = risk_assessment(application_id)
                _label_run(outcome, labels)
                step = "release"
                outcome = release(application_id)
                logger.info("%s (%s) is %s, lane %s", application_id, outcome.registration_number, outcome.status, outcome.lane)
        except DeclarationNotFound:
            raise  # nothing to report on: the caller named no stored declaration
        except Exception as exc:
            logger.error("%s: step %s failed beyond its retries: %s: %s", application_id, step, type(exc).__name__, exc)
            report = report_failure(application_id, step, describe_error(step, exc), run_log.text(), flow_run_id,
                                    return_state=True)
            if report.is_completed():
                logger.error("%s: reported to the support service as %s", application_id, report.result())
            else:
                logger.error("%s: the support report could not be queued: %s", application_id, report.message)
            _send_notices(application_id)
            raise
    _send_notices(application_id)
    create_markdown_artifact(
        key=f"clearance-{application_id.lower()}", markdown=_summary(outcome), description=f"Outcome of {application_id}"
    )
    return outcome.model_dump()


if __name__ == "__main__":  # python -m flows.clearance APPLICATION_ID (used by `customs submit` without --wait)
    clearance(sys.argv[1])
