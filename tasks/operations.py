"""What operations staff see in the Prefect UI: the operations summary artifact, with the clearance runs
that failed lately (read from Prefect: the one place that knows them)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType

from customs.core.clock import utcnow
from customs.services.queries import operations_summary, operations_summary_markdown
from tasks.policy import time_limit

FAILED_RUNS_WINDOW = timedelta(hours=24)


def failed_clearance_runs(
    client: SyncPrefectClient, now: datetime, window: timedelta = FAILED_RUNS_WINDOW
) -> list[dict[str, Any]]:
    """Clearance flow runs that failed or crashed in the last ``window`` (at most 100, newest first)."""
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["clearance"]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])),
            start_time=FlowRunFilterStartTime(after_=now - window),
        ),
        limit=100,
    )
    return [
        {
            "flow_run": r.name,
            "id": str(r.id),
            "state": r.state.name if r.state else "",
            "message": (r.state.message or "")[:200] if r.state else "",
        }
        for r in runs
    ]


@task(name="operations-summary")
@time_limit(120)
def publish_operations_summary() -> None:
    """The figures of `customs ops` as the `operations-summary` artifact in the UI."""
    now = utcnow()
    with get_client(sync_client=True) as client:
        failed = failed_clearance_runs(client, now)
    create_markdown_artifact(
        key="operations-summary",
        markdown=operations_summary_markdown(operations_summary(now, failed_runs=failed)),
        description="Declarations, deadlines, paper copies, failed runs, release marks, outbox",
    )
