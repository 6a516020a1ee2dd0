"""The reconciler: clearance runs whose state disagrees with their declaration (customs.rules.reconcile),
marked Crashed, re-run or closed through Prefect's API, each action written to the declaration's audit chain.

Every worker runs it every CUSTOMS_WORKER_RECONCILE_SECONDS for the runs of dead workers (scope
``orphans``): pending or running runs without a heartbeat for CUSTOMS_WORKER_HEARTBEAT_TIMEOUT are marked
Crashed (the automation does the same, but a run killed before its first heartbeat reached the server
never arms it), and crashed runs are run again: a worker that died is replaced within a minute or two,
with no person acting. Batch-recheck runs it over every unfinished clearance run (scope ``all``), which
also closes runs left waiting after their declaration was decided.
"""

from __future__ import annotations

from dataclasses import replace
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
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_logger
from prefect.states import AwaitingRetry, Cancelled, Crashed

from customs.core.clock import utcnow
from customs.core.settings import Settings, get_settings
from customs.rules.reconcile import CLOSE, CRASH, FINAL, RERUN, RunView, failed_on_database, reconcile_action
from customs.services.ops_alerts import crash_seen_by_reconciler
from customs.services.queries import statuses_of
from customs.services.rerun import reconciled_before, record_reconciliation, reruns_recorded
from tasks.policy import time_limit

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


def _last_heartbeat(client: SyncPrefectClient, flow_run_id: str, since: datetime) -> datetime | None:
    """When the run's last heartbeat since ``since`` occurred, if there was one."""
    event_filter = EventFilter(
        occurred=EventOccurredFilter(since=since),
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    response = client.request("POST", "/events/filter", json={"filter": event_filter.model_dump(mode="json"), "limit": 1})
    events = response.json().get("events") or []
    return datetime.fromisoformat(events[0]["occurred"]) if events else None


def _with_heartbeat(client: SyncPrefectClient, view: RunView, now: datetime, timeout: timedelta) -> RunView:
    """A pending or running run old enough to have missed its heartbeats: when was its last one?"""
    if view.state_type not in ("PENDING", "RUNNING") or view.state_age < timeout:
        return view
    last = _last_heartbeat(client, view.flow_run_id, now - timeout)
    return replace(view, heartbeat_age=now - last if last else None, heartbeats_checked=True)


def _view(run: FlowRun, now: datetime) -> RunView:
    state = run.state
    message = (state.message or "") if state else ""
    return RunView(
        flow_run_id=str(run.id),
        name=run.name,
        state_type=state.type.value if state else "",
        state_name=state.name if state else "",
        state_age=now - state.timestamp if state and state.timestamp else timedelta(0),
        run_count=run.run_count,
        application_id=(run.parameters or {}).get("application_id"),
        failed_on_database=bool(state and state.is_failed() and failed_on_database(message)),
        state_id=str(state.id) if state and state.id else "",
        state_message=message[:2000],
    )


def reconcile_clearance_runs(
    client: SyncPrefectClient, *, scope: str = "all", now: datetime | None = None, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Re-run crashed clearance runs of unfinished declarations, close runs of final ones; what was done.

    ``scope``: ``orphans`` (the workers' frequent pass: crashed runs, and pending or running ones whose
    heartbeats stopped) or ``all`` (batch-recheck: also runs of final declarations, paused ones included)."""
    settings = settings or get_settings()
    now = now or utcnow()
    queries = [([StateType.CRASHED, StateType.FAILED], now - CRASHED_WINDOW)]
    if scope == "all":
        queries.append(([StateType.PENDING, StateType.RUNNING, StateType.PAUSED], None))
    else:
        queries.append(([StateType.PENDING, StateType.RUNNING], None))
    done: list[dict[str, Any]] = []

    def settle(views: list[RunView]) -> None:
        statuses = statuses_of([v.application_id for v in views if v.application_id])
        timeout = settings.worker_heartbeat_timeout
        for view in views:
            status = statuses.get(view.application_id or "")
            if status is not None and status not in FINAL:
                view = _with_heartbeat(client, view, now, timeout)
            # A re-run that crashes before it starts (its worker could not submit it) keeps its run count: the
            # re-runs already made count as attempts, so it is run again, and left for a person after the last.
            reruns = reruns_recorded(view.application_id, view.flow_run_id) if status is not None else 0
            decision = reconcile_action(
                replace(view, run_count=max(view.run_count, reruns + 1)),
                status,
                max_attempts=settings.reconcile_max_attempts,
                after=settings.reconcile_after,
                heartbeat_timeout=timeout,
            )
            if decision is None:
                continue
            entry = {
                "flow_run": view.name,
                "flow_run_id": view.flow_run_id,
                "application_id": view.application_id,
                "state": view.state_name,
                "run_count": view.run_count,
                "state_id": view.state_id,
                "status": status,
                "action": decision.action,
                "why": decision.why,
            }
            if status is not None and reconciled_before(view.application_id, entry):
                continue  # a run left for a person stays as it is: said once
            crashed = view.state_type == "CRASHED"
            if not _act(client, view, decision.action, decision.why):
                entry["action"] = f"{decision.action}_failed"
            elif decision.action == CRASH:
                crashed = True
            if crashed and status is not None:
                _alert_crash(view, decision.why if decision.action == CRASH else view.state_message, now)
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


def _alert_crash(view: RunView, message: str, now: datetime) -> None:
    """The crash's alert, as the automation would have made it (the same key: one alert, whoever sees it first);
    the only one when Prefect's events did not get through (its Redis away: no automation fired)."""
    try:
        crash_seen_by_reconciler(
            view.application_id or "",
            flow_run_id=view.flow_run_id,
            run_name=view.name,
            run_count=view.run_count,
            message=message,
            now=now,
        )
    except Exception as exc:  # the database away: the next pass sees the crash again (a re-run one: the automation's)
        get_logger("customs.reconciler").warning(
            "the crash of %s could not be alerted: %s: %s", view.name, type(exc).__name__, exc
        )


def _act(client: SyncPrefectClient, view: RunView, action: str, why: str) -> bool:
    """Re-run through orchestration (a run another worker already took is not taken again); close by force."""
    try:
        if action == RERUN:
            result = client.set_flow_run_state(view.flow_run_id, AwaitingRetry(message=f"re-run by the reconciler: {why}"))
            return result.state is not None and result.state.is_scheduled()
        if action == CRASH:  # through orchestration: a run that ended or moved on meanwhile is left as it is
            result = client.set_flow_run_state(view.flow_run_id, Crashed(message=f"marked by the reconciler: {why}"))
            return result.state is not None and result.state.is_crashed()
        if action == CLOSE:
            client.set_flow_run_state(view.flow_run_id, Cancelled(message=f"closed by the reconciler: {why}"), force=True)
            return True
    except ObjectNotFound:
        return False
    return True  # report: nothing to do in Prefect


@task(name="reconcile-runs")
@time_limit(600)
def reconcile_runs() -> list[dict[str, Any]]:
    """Clearance runs whose state disagrees with their declaration: re-run or closed (see tasks/reconcile.py)."""
    with get_client(sync_client=True) as client:
        return reconcile_clearance_runs(client, scope="all")
