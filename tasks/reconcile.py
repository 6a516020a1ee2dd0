"""The reconciler: clearance runs whose state disagrees with their declaration (customs.rules.reconcile),
re-run or closed through Prefect's API, each action written to the declaration's audit chain.

Every worker runs it for crashed runs every CUSTOMS_WORKER_RECONCILE_SECONDS (a worker that died is
replaced within a minute or two, with no person acting); batch-recheck runs it over every unfinished
clearance run (scope ``all``), which also closes runs left waiting after their declaration was decided.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import AwaitingRetry, Cancelled

from customs.core.clock import utcnow
from customs.core.settings import Settings, get_settings
from customs.rules.reconcile import CLOSE, RERUN, RunView, reconcile_action
from customs.services.queries import statuses_of
from customs.services.rerun import reconciled_before, record_reconciliation

CRASHED_WINDOW = timedelta(hours=24)
PAGE = 200


def _clearance_runs(client: SyncPrefectClient, states: list[StateType], *, ended_after: datetime | None = None):
    """Clearance runs in these states (ended after ``ended_after``, for terminal ones), oldest first, page by page."""
    offset = 0
    while True:
        page = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["clearance"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
                end_time=FlowRunFilterEndTime(after_=ended_after) if ended_after else None,
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=PAGE,
            offset=offset,
        )
        yield from page
        if len(page) < PAGE:
            return
        offset += PAGE


def _view(run: FlowRun, now: datetime) -> RunView:
    state = run.state
    return RunView(
        flow_run_id=str(run.id),
        name=run.name,
        state_type=state.type.value if state else "",
        state_name=state.name if state else "",
        state_age=now - state.timestamp if state and state.timestamp else timedelta(0),
        run_count=run.run_count,
        application_id=(run.parameters or {}).get("application_id"),
    )


def reconcile_clearance_runs(
    client: SyncPrefectClient, *, scope: str = "all", now: datetime | None = None, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Re-run crashed clearance runs of unfinished declarations, close runs of final ones; what was done.

    ``scope``: ``crashed`` (the workers' frequent pass) or ``all`` (batch-recheck: also pending, running and
    paused runs)."""
    settings = settings or get_settings()
    now = now or utcnow()
    queries = [([StateType.CRASHED], now - CRASHED_WINDOW)]
    if scope == "all":
        queries.append(([StateType.PENDING, StateType.RUNNING, StateType.PAUSED], None))
    done: list[dict[str, Any]] = []

    def settle(views: list[RunView]) -> None:
        statuses = statuses_of([v.application_id for v in views if v.application_id])
        for view in views:
            status = statuses.get(view.application_id or "")
            decision = reconcile_action(
                view, status, max_attempts=settings.reconcile_max_attempts, after=settings.reconcile_after
            )
            if decision is None:
                continue
            entry = {
                "flow_run": view.name,
                "flow_run_id": view.flow_run_id,
                "application_id": view.application_id,
                "state": view.state_name,
                "run_count": view.run_count,
                "status": status,
                "action": decision.action,
                "why": decision.why,
            }
            if status is not None and reconciled_before(view.application_id, entry):
                continue  # a run left for a person stays as it is: said once
            if not _act(client, view, decision.action, decision.why):
                entry["action"] = f"{decision.action}_failed"
            if status is not None:
                record_reconciliation(view.application_id, entry, now=now)
            done.append(entry)

    for states, ended_after in queries:
        batch: list[RunView] = []
        for run in _clearance_runs(client, states, ended_after=ended_after):
            batch.append(_view(run, now))
            if len(batch) >= PAGE:
                settle(batch)
                batch = []
        settle(batch)
    return done


def _act(client: SyncPrefectClient, view: RunView, action: str, why: str) -> bool:
    """Re-run through orchestration (a run another worker already took is not taken again); close by force."""
    try:
        if action == RERUN:
            result = client.set_flow_run_state(view.flow_run_id, AwaitingRetry(message=f"re-run by the reconciler: {why}"))
            return result.state is not None and result.state.is_scheduled()
        if action == CLOSE:
            client.set_flow_run_state(view.flow_run_id, Cancelled(message=f"closed by the reconciler: {why}"), force=True)
            return True
    except ObjectNotFound:
        return False
    return True  # report: nothing to do in Prefect


@task(name="reconcile-runs", timeout_seconds=600)
def reconcile_runs() -> list[dict[str, Any]]:
    """Clearance runs whose state disagrees with their declaration: re-run or closed (see tasks/reconcile.py)."""
    with get_client(sync_client=True) as client:
        return reconcile_clearance_runs(client, scope="all")
