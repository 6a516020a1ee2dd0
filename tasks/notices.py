"""Sending what the outbox holds, as Prefect tasks (the dispatcher itself is customs.services.outbox)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from customs.services.outbox import DispatchReport, dispatch_due, dispatch_due_sync
from tasks.policy import time_limit


def _log(report: DispatchReport) -> dict[str, Any]:
    logger = get_run_logger()
    if report.claimed:
        counts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(report.outcomes.items()) if count)
        logger.info("notices: %d due, %s", report.claimed, counts or "none tried")
    if report.deferred:
        logger.warning("notices: %s", report.deferred)
    for error in report.errors[:10]:
        logger.warning("delivery: %s", error)
    return report.as_dict()


@task(name="deliver-notices", retries=2, retry_delay_seconds=[2, 5])
@time_limit(300)
def deliver_notices(application_id: str | None = None, limit: int | None = None, in_clearance: bool = False) -> dict[str, Any]:
    """Send the due notices (of one declaration, or all); delivery problems are recorded, not raised.
    ``in_clearance``: a clearance run's own pass, which never waits long for the SMTP server (see dispatch_due)."""
    return _log(dispatch_due_sync(application_id=application_id, limit=limit, in_clearance=in_clearance))


@task(name="dispatch-pass", retries=2, retry_delay_seconds=[2, 5], timeout_seconds=600)
async def dispatch_pass(limit: int) -> dict[str, Any]:
    """One pass of the dispatcher over at most ``limit`` due notices."""
    return _log(await dispatch_due(limit=limit))
