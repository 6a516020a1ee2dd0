"""Automations Prefect runs for the service, defined here and applied by `customs serve` and `customs deploy`
(created when missing, updated when they differ, by name; they show on the UI's Automations page).

"Crash runs whose worker stopped": a clearance worker emits a heartbeat for each run it holds, every
CUSTOMS_WORKER_HEARTBEAT_SECONDS. When a run's heartbeats stop for CUSTOMS_WORKER_HEARTBEAT_TIMEOUT while
it has not ended or been suspended, its worker is gone (killed, host lost): Prefect marks it Crashed, and
the reconciler of any other worker runs it again (Prefect's documented zombie-run recipe, limited to the
runs of the work pool's workers, with a timeout well above the heartbeat).

Three reach a person, through the intake API's POST /v1/ops/alerts (customs.services.ops_alerts decides who):
Prefect calls it with the event that fired them (a CallWebhook action, its Webhook block "customs-ops-alerts" made
here with the URL and the operations alert token), and the API queues the e-mails in the outbox:

- "customs: clearance run failed or crashed": a run of the flow clearance enters Failed or Crashed: the support
  report of that attempt and its copy to the operations mailbox;
- "customs: deadline breached": the event our deadline passes emit when they record a breach (tasks/events.py):
  release, the zone's supervisors; registration, the support service;
- "customs: print request overdue": the event print-deadlines or a print timer emits at 30 minutes without the
  copy printed: the office's supervisors.

Prefect records the answer of each call (the automation's action events) but does not call again when the API
did not answer; that is why the breaches' e-mails are queued with the breach itself (see ops_alerts).
"""

from __future__ import annotations

from datetime import timedelta

from httpx import HTTPStatusError
from prefect.automations import Automation, CallWebhook, ChangeFlowRunState, EventTrigger, Posture
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType, WorkPool
from prefect.exceptions import ObjectNotFound
from pydantic import SecretStr

from customs.core.settings import Settings
from customs.rules.outcomes import final_state_names
from customs.services.ops_alerts import (
    FAILED_RUN_EVENTS,
    PRINT_REQUEST_OVERDUE,
    REGISTRATION_DEADLINE_BREACHED,
    RELEASE_DEADLINE_BREACHED,
    ops_alert_token,
)

CLEARANCE_FAILED = "customs: clearance run failed or crashed"
DEADLINE_BREACHED = "customs: deadline breached"
PRINT_OVERDUE = "customs: print request overdue"
WEBHOOK_BLOCK = "customs-ops-alerts"

# What Prefect sends to POST /v1/ops/alerts (a Jinja template rendered by the server for each firing)
ALERT_PAYLOAD = '{"automation": {{ automation.name | tojson }}, "event": {{ event | tojson }}}'

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
    # A clearance run ends in a state named after its outcome (Released, Refused, ..., Not started): Prefect names
    # its event after the state, so each is an end too (else a completed run would be marked Crashed).
    *(f"prefect.flow-run.{name}" for name in sorted(final_state_names())),
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


def ensure_alert_webhook(settings: Settings) -> tuple[object, list[str]]:
    """The Webhook block the alerting automations call: the intake API's /v1/ops/alerts with the operations alert
    token (kept as Prefect keeps block secrets). Returns its block document id."""
    wanted = Webhook(
        method="POST",
        url=SecretStr(settings.ops_alert_endpoint),
        headers={"Authorization": f"Bearer {ops_alert_token(settings)}", "Content-Type": "application/json"},
    )
    try:
        existing = Webhook.load(WEBHOOK_BLOCK)
    except ValueError:
        existing = None
    if existing is not None and (
        existing.url.get_secret_value() == settings.ops_alert_endpoint
        and existing.headers.get_secret_value() == wanted.headers.get_secret_value()
        and existing.method == "POST"
    ):
        return existing._block_document_id, []
    block_id = wanted.save(WEBHOOK_BLOCK, overwrite=True)
    return block_id, [f"webhook block {WEBHOOK_BLOCK!r} {'updated' if existing else 'created'}: {settings.ops_alert_endpoint}"]


def _reactive(expect: set[str], match: dict, match_related: dict | None = None) -> EventTrigger:
    return EventTrigger(
        expect=expect,
        match=match,
        match_related=match_related or {},
        for_each={"prefect.resource.id"},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(0),
    )


def alerting_automations(block_id, settings: Settings) -> list[Automation]:
    call = CallWebhook(block_document_id=block_id, payload=ALERT_PAYLOAD)
    where = f"POST {settings.ops_alert_endpoint}"
    return [
        Automation(
            name=CLEARANCE_FAILED,
            description=(
                "A clearance run (one declaration) enters Failed or Crashed: the support service gets the report of that "
                f"attempt (the one the run made when a step failed, or one made from the run's state) and the operations "
                f"mailbox {settings.ops_address} a copy; once per run and attempt. Calls {where}."
            ),
            trigger=_reactive(
                set(FAILED_RUN_EVENTS),
                {"prefect.resource.id": "prefect.flow-run.*"},
                {"prefect.resource.role": "flow", "prefect.resource.name": "clearance"},
            ),
            actions=[call],
        ),
        Automation(
            name=DEADLINE_BREACHED,
            description=(
                "A legal deadline passed (release 4 h after registration: the supervisors of the declaration's zone; "
                "registration 2 h after submission: the support service), emitted once by whichever pass recorded it "
                "(deadline-watch, batch-recheck, the waiting clearance run). The e-mails are queued with the breach; "
                f"this call records the alert and adds anyone missed, never a second e-mail. Calls {where}."
            ),
            trigger=_reactive(
                {RELEASE_DEADLINE_BREACHED, REGISTRATION_DEADLINE_BREACHED}, {"prefect.resource.id": "customs.declaration.*"}
            ),
            actions=[call],
        ),
        Automation(
            name=PRINT_OVERDUE,
            description=(
                "A paper copy not printed 30 minutes after it was requested (emitted once by print-deadlines or the "
                "request's timer): the supervisors of the office that holds the print queue. The e-mails are queued with "
                f"the breach; this call records the alert and adds anyone missed. Calls {where}."
            ),
            trigger=_reactive({PRINT_REQUEST_OVERDUE}, {"prefect.resource.id": "customs.print-request.*"}),
            actions=[call],
        ),
    ]


def apply_automations(pool: WorkPool, settings: Settings) -> list[str]:
    """Create or update the service's automations (by name), and the webhook block the alerting ones call;
    returns what was done."""
    block_id, done = ensure_alert_webhook(settings)
    for wanted in (orphaned_runs_automation(pool, settings), *alerting_automations(block_id, settings)):
        try:
            existing = Automation.read(name=wanted.name)
        except ValueError:
            wanted.create()
            done.append(f"automation {wanted.name!r} created")
            done += _one_of_each(wanted.name)
            continue
        if existing.model_dump(exclude={"id", "owner_resource"}) != wanted.model_dump(exclude={"id", "owner_resource"}):
            wanted.id = existing.id
            wanted.update()
            done.append(f"automation {wanted.name!r} updated")
    return done


def _one_of_each(name: str) -> list[str]:
    """Prefect does not keep automation names unique: two hosts re-creating a lost one at the same moment (see
    customs.orchestration.upkeep) would each make one, and each firing would call twice. Every host keeps the one
    with the lowest id and deletes the others, so they agree whichever sees the pair first."""
    with get_client(sync_client=True) as client:
        same = sorted(client.read_automations_by_name(name), key=lambda a: str(a.id))
        for extra in same[1:]:
            try:
                client.delete_automation(extra.id)
            except (ObjectNotFound, HTTPStatusError):  # the other host deleted it first (404)
                continue
    return (
        [f"automation {name!r}: {len(same) - 1} duplicate(s) made by another host at the same moment deleted"]
        if len(same) > 1
        else []
    )
