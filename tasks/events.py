"""The events our code tells Prefect, for its automations (customs.orchestration.automations).

A deadline breached and a print request overdue are recorded in the database, once each, by whichever pass
finds them first (deadline-watch, batch-recheck, the waiting clearance run, print-deadlines, a print timer);
that pass emits the event right after its transaction committed, once per occurrence. The event's id is derived
from the occurrence, so an event sent twice (a task retried after its commit) is the same event, and the
intake API's /v1/ops/alerts records each occurrence once whatever calls it.

Resources: ``customs.declaration.<application id>`` and ``customs.print-request.<request id>``; related: the
office (``customs.office.<code>``, role office), the zone (``customs.zone.<office>.<zone>``, role zone) and, for a
print request, its declaration (role declaration).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from prefect.events import emit_event

# The events' names: the automations' triggers and the alerts' routes expect exactly these
from customs.services.ops_alerts import PRINT_REQUEST_OVERDUE, REGISTRATION_DEADLINE_BREACHED, RELEASE_DEADLINE_BREACHED

_NAMESPACE = uuid.UUID("6f1d3f4e-2b0a-4c55-9a51-c0570f5e0a17")


def occurrence_id(event: str, resource_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{event}:{resource_id}")


def _related(office: str | None, zone: str | None) -> list[dict[str, str]]:
    related = []
    if office:
        related.append({"prefect.resource.id": f"customs.office.{office}", "prefect.resource.role": "office"})
        if zone:
            related.append({"prefect.resource.id": f"customs.zone.{office}.{zone}", "prefect.resource.role": "zone"})
    return related


def _emit(event: str, resource: dict[str, str], related: list[dict[str, str]], payload: dict[str, Any], at: str) -> bool:
    sent = emit_event(
        event=event,
        resource=resource,
        related=related,
        payload=payload,
        occurred=datetime.fromisoformat(at),
        id=occurrence_id(event, resource["prefect.resource.id"]),
    )
    return sent is not None


def emit_deadline_breaches(breaches: list[dict[str, Any]]) -> int:
    """One event per breach recorded (registration or release); returns how many were handed to Prefect."""
    sent = 0
    for breach in breaches:
        event = RELEASE_DEADLINE_BREACHED if breach["kind"] == "release" else REGISTRATION_DEADLINE_BREACHED
        resource = {
            "prefect.resource.id": f"customs.declaration.{breach['application_id']}",
            "prefect.resource.name": breach.get("registration_number") or breach["application_id"],
        }
        sent += _emit(event, resource, _related(breach.get("office"), breach.get("zone")), breach, breach["breached_at"])
    return sent


def emit_print_overdue(overdue: list[dict[str, Any]]) -> int:
    """One event per print request found overdue (30 minutes passed, the copy not printed)."""
    sent = 0
    for request in overdue:
        resource = {
            "prefect.resource.id": f"customs.print-request.{request['request_id']}",
            "prefect.resource.name": request["request_id"],
        }
        related = _related(request.get("office"), None) + [
            {"prefect.resource.id": f"customs.declaration.{request['application_id']}", "prefect.resource.role": "declaration"}
        ]
        sent += _emit(PRINT_REQUEST_OVERDUE, resource, related, request, request["breached_at"])
    return sent
