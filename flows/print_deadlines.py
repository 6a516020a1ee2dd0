"""print-deadlines: the 30-minute deadline of paper copies, watched every minute.

Each pass reads the stored request times: at 20 minutes without a print the office's supervisors are
alerted, at 30 minutes the breach is recorded in the audit chain and reported to them. It also renders any
copy still missing a minute after its request (the paper-copy run that should have done it never came). Nothing is
held between passes, so a watcher that stops and starts again (or two at once) alerts and records
each request once. Every pass publishes today's SLA per office as a table artifact.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from customs.core.clock import job_run_name, kz_date, utcnow
from customs.services.printing import sla_report
from tasks.notices import deliver_notices
from tasks.printing import find_copies_to_render, print_deadline_check, render_paper_copy


@flow(name="print-deadlines", flow_run_name=job_run_name("print-deadlines"), persist_result=False)
def print_deadlines() -> dict:
    """One pass, at the real time. No parameter sets the clock (issue 23: a run created with a future `now` wrote
    false breaches into the audit chain and e-mailed the supervisors); a test replays a moment with
    ``deadline_pass(moment)`` inside a flow of its own."""
    return deadline_pass(utcnow())


def deadline_pass(moment: datetime) -> dict:
    """The body of a print-deadlines pass as of ``moment`` (the flow's: now)."""
    report = print_deadline_check(moment)
    if report["alerted"] or report["breached"]:
        get_run_logger().warning(
            "print requests: %d alerted at 20 min, %d breached at 30 min", len(report["alerted"]), len(report["breached"])
        )
        deliver_notices(return_state=True)
    # the safety net of paper-copy runs: copies still not rendered a minute after their request
    for request_id in find_copies_to_render(moment, older_than_seconds=60):
        state = render_paper_copy(request_id, return_state=True)
        if state.is_failed():
            get_run_logger().error("the copy of print request %s could not be rendered: %s", request_id, state.message)
    today = kz_date(moment)
    sla = sla_report(date_from=today, date_to=today, now=moment)
    create_table_artifact(
        key="print-sla-today",
        table=[{"office": row["office"], **{k: v for k, v in row.items() if k != "office"}} for row in sla["offices"]]
        or [{"office": "-", "requests": 0}],
        description=f"Paper copies requested on {today:%d.%m.%Y} (Kazakhstan time), "
        "per office: printed within 30 minutes, late, open; minutes to print",
    )
    return {**report, "sla": sla["total"]}


@flow(name="print-deadline-timer", flow_run_name="{request_id}-{stage}", persist_result=False)
def print_deadline_timer(request_id: str, stage: str) -> dict:
    """Scheduled for the very moment a request reaches 20 minutes (stage alert) or 30 (breach): one deadline
    pass then, so the alert and the breach come within about a second instead of up to a minute late.
    The every-minute print-deadlines pass stays as the safety net (a timer that could not be scheduled)."""
    report = print_deadline_check(utcnow())
    if report["alerted"] or report["breached"]:
        deliver_notices(return_state=True)
    return {"request_id": request_id, "stage": stage, **report}


if __name__ == "__main__":
    print(print_deadlines())
