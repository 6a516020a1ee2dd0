"""Paper copies as Prefect tasks: rendering a copy, and the 30-minute deadline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task

from customs.services.printing import check_print_deadlines, copies_to_render, render_print_copy
from tasks.events import emit_print_overdue
from tasks.policy import DATABASE_RETRIES, time_limit


@task(name="print-deadlines", **DATABASE_RETRIES)
@time_limit(120)
def print_deadline_check(now: datetime | None = None) -> dict[str, Any]:
    """Supervisors alerted at 20 minutes, breaches recorded at 30, from the stored times (each once; each request
    found overdue told to Prefect as an event for the automations)."""
    report = check_print_deadlines(now=now)
    emit_print_overdue(report.overdue)
    return report.as_dict()


@task(name="render-paper-copy", task_run_name="render-{request_id}", retries=1, retry_delay_seconds=10)
def render_paper_copy(request_id: str) -> dict[str, Any]:
    """The copy of one request, rendered in a process of its own and stored with its SHA-256 (audited)."""
    return render_print_copy(request_id).as_dict()


@task(name="copies-to-render", **DATABASE_RETRIES)
def find_copies_to_render(now: datetime | None = None, older_than_seconds: float = 0.0) -> list[str]:
    from datetime import timedelta

    return copies_to_render(now=now, older_than=timedelta(seconds=older_than_seconds))
