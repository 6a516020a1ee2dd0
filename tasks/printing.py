"""The 30-minute deadline of paper copies, as a Prefect task."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task

from customs.services.printing import check_print_deadlines
from tasks.policy import DATABASE_RETRIES


@task(name="print-deadlines", timeout_seconds=120, **DATABASE_RETRIES)
def print_deadline_check(now: datetime | None = None) -> dict[str, Any]:
    """Supervisors alerted at 20 minutes, breaches recorded at 30, from the stored times (each once)."""
    return check_print_deadlines(now=now).as_dict()
