"""deadline-watch (every minute): registration deadlines, and release deadlines of declarations waiting for an official.

At 75% of the time from registration to the legal deadline (4 hours by default) the zone's supervisors
are alerted; at the deadline the breach is recorded in the audit chain and they are alerted again.
Each happens once per declaration, whatever the number of watchers or runs.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from prefect import task

from tasks.common import retry_on_database_error
from tasks.officials import release_deadlines
from tasks.outbox import deliver_notices
from tasks.registration import check_registration_deadlines


@task(name="registration-deadlines", retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_on_database_error, timeout_seconds=300)
def registration_deadlines() -> dict:
    return check_registration_deadlines()


@flow(name="deadline-watch", persist_result=False)
def deadline_watch() -> dict:
    """Registration deadlines (alert to the support service: registration is automatic) and release deadlines (the zone's supervisors)."""
    logger = get_run_logger()
    registration = registration_deadlines()
    release = release_deadlines()
    for what, report in (("registration", registration), ("release", release)):
        if report["alerted"] or report["breached"]:
            logger.warning("%s deadlines: %d alerted at 75%%, %d breached", what, len(report["alerted"]), len(report["breached"]))
    if any(r["alerted"] or r["breached"] for r in (registration, release)):
        deliver_notices(return_state=True)
    publish_operations_summary()
    return {"registration": registration, "release": release}


@task(name="operations-summary", timeout_seconds=120)
def publish_operations_summary() -> None:
    """Every minute, the figures of `customs ops` as the `operations-summary` artifact in the UI."""
    from prefect.artifacts import create_markdown_artifact

    from customs.services import operations_summary, operations_summary_markdown

    create_markdown_artifact(key="operations-summary", markdown=operations_summary_markdown(operations_summary()),
                             description="Declarations, deadlines, paper copies, failed runs, release marks, outbox")


if __name__ == "__main__":
    print(deadline_watch())
