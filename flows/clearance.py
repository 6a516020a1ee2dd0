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
from tasks.common import StepOutcome
from tasks.registration import register
from tasks.release import release
from tasks.risk import risk_assessment
from tasks.signature import signature_check

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


@flow(name="clearance", flow_run_name="{application_id}", persist_result=False, log_prints=False)
def clearance(application_id: str) -> dict:
    """Clear one declaration from submission to release or to its next resting state."""
    logger = get_run_logger()
    labels: dict = {}

    outcome = signature_check(application_id)
    _label_run(outcome, labels)
    outcome = register(application_id)
    _label_run(outcome, labels)
    if outcome.status == Status.REGISTRATION_REFUSED:
        logger.info("%s refused registration: %s", application_id, ", ".join(r["code"] for r in outcome.reasons))
    else:
        outcome = risk_assessment(application_id)
        _label_run(outcome, labels)
        outcome = release(application_id)
        logger.info("%s (%s) is %s, lane %s", application_id, outcome.registration_number, outcome.status, outcome.lane)
    create_markdown_artifact(
        key=f"clearance-{application_id.lower()}", markdown=_summary(outcome), description=f"Outcome of {application_id}"
    )
    return outcome.model_dump()


if __name__ == "__main__":  # python -m flows.clearance APPLICATION_ID (used by `customs submit` without --wait)
    clearance(sys.argv[1])
