"""Automations Prefect runs for the service, defined here and applied by `customs serve` and `customs deploy`.

"Crash runs whose worker stopped": a clearance worker emits a heartbeat for each run it holds, every
CUSTOMS_WORKER_HEARTBEAT_SECONDS. When a run's heartbeats stop for CUSTOMS_WORKER_HEARTBEAT_TIMEOUT while
it has not ended or been suspended, its worker is gone (killed, host lost): Prefect marks it Crashed, and
the reconciler of any other worker runs it again (Prefect's documented zombie-run recipe, limited to the
runs of the work pool's workers, with a timeout well above the heartbeat).
"""

from __future__ import annotations

from prefect.automations import Automation, ChangeFlowRunState, EventTrigger, Posture
from prefect.client.schemas.objects import StateType, WorkPool

from customs.core.settings import Settings

CRASH_ORPHANED_RUNS = "customs: crash runs whose worker stopped"

# A run's heartbeats stop for good when it ends or waits suspended: those are not a dead worker.
_RUN_ENDED = {
    "prefect.flow-run.heartbeat",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Suspended",
    "prefect.flow-run.Paused",
}


def orphaned_runs_automation(pool: WorkPool, settings: Settings) -> Automation:
    timeout = settings.worker_heartbeat_timeout
    return Automation(
        name=CRASH_ORPHANED_RUNS,
        description=(
            f"A run of work pool {pool.name} whose worker stopped sending its heartbeats for {timeout.total_seconds():g} s "
            "(they come every CUSTOMS_WORKER_HEARTBEAT_SECONDS from claim to end) is marked Crashed; the clearance "
            "workers' reconciler runs it again."
        ),
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "work-pool", "prefect.resource.id": f"prefect.work-pool.{pool.id}"},
            after={"prefect.flow-run.heartbeat"},
            expect=_RUN_ENDED,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timeout,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"its worker stopped: no heartbeat for {timeout.total_seconds():g} s (the run will be run again)",
            )
        ],
    )


def apply_automations(pool: WorkPool, settings: Settings) -> list[str]:
    """Create or update the service's automations (by name); returns what was done."""
    done = []
    for wanted in (orphaned_runs_automation(pool, settings),):
        try:
            existing = Automation.read(name=wanted.name)
        except ValueError:
            wanted.create()
            done.append(f"automation {wanted.name!r} created")
            continue
        if existing.model_dump(exclude={"id", "owner_resource"}) != wanted.model_dump(exclude={"id", "owner_resource"}):
            wanted.id = existing.id
            wanted.update()
            done.append(f"automation {wanted.name!r} updated")
    return done
